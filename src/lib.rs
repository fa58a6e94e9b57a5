//! upgrade-guard: admission webhooks and an offline validator that make
//! in-place upgrades of StatefulSets and Deployments safe.
//!
//! Everything that decides is pure ([`policy`], [`workload`], [`decide`]);
//! [`webhook`] and [`cli`] only translate to and from it.

pub mod certs;
pub mod cli;
pub mod convert;
pub mod decide;
pub mod echo;
pub mod manifest;
pub mod policy;
pub mod refresh;
pub mod webhook;
pub mod workload;
pub mod yaml;
