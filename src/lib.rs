//! upgrade-guard: admission webhooks, a refresh controller and an offline
//! validator that make in-place upgrades of StatefulSets and Deployments safe.
//!
//! Everything that decides is pure ([`policy`], [`workload`], [`decide`],
//! the refresh step in [`refresh`]); [`webhook`], the refresh executor and
//! [`cli`] only translate to and from it.
//!
//! The layers, each importing only from the ones below it:
//!
//! 1. [`workload`] (one view over StatefulSet and Deployment, the
//!    annotations' contract), [`template`] (a pod template as decisions
//!    read it), [`claim`] (the version a claim last served), [`yaml`] (the YAML reader and the file walk),
//!    [`quoted`] (a user's values quoted back, bounded);
//! 2. [`policy`]: the policy model and version arithmetic;
//! 3. [`cluster`]: what decisions may look up, and the live caches behind it;
//! 4. [`decide`] (the verdict on one change) and [`manifest`] (object sets
//!    read from files);
//! 5. [`webhook`] (the HTTP server) and [`refresh`] (the controller);
//! 6. [`convert`] (Deployment → StatefulSet) and [`certs`];
//! 7. [`cli`]: one file per command.

pub mod certs;
pub mod claim;
pub mod cli;
pub mod cluster;
pub mod convert;
pub mod decide;
pub mod manifest;
pub mod policy;
pub mod quoted;
pub mod refresh;
pub mod template;
pub mod webhook;
pub mod workload;
pub mod yaml;
