//! The admission webhook: translation between AdmissionReview and the
//! decision core. Nothing here decides.
//!
//! A review's way through: [`server`] (HTTPS, limits, metrics, audit)
//! hands the body to [`review`], which routes it from [`request`] (the
//! envelope read in one pass, objects in place where the route is known).
//! A workload UPDATE is read by [`workload_update`] (only what decisions
//! read; [`schema`] checks the rest against its k8s-openapi types, and
//! [`passed`] remembers the texts that passed lately); a pod
//! without a claim is answered from its metadata; everything else, and
//! anything those decline, is read whole into its types ([`objects`], less
//! managedFields) by [`full_read`]. [`wire`] holds what both
//! share: the request's facts and the answer's bytes.

pub mod events;
mod full_read;
mod json;
pub mod metrics;
pub mod objects;
mod passed;
pub mod rbac;
mod request;
pub mod review;
mod schema;
pub mod server;
pub mod tls;
mod wire;
mod workload_update;

pub use review::{Caller, ReviewError, Reviewed, review, review_in_full};
pub use wire::Endpoint;
