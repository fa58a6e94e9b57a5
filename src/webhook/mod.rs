//! The admission webhook: translation between AdmissionReview and the
//! decision core. Nothing here decides.

pub mod events;
mod fast;
pub mod lean;
pub mod metrics;
pub mod rbac;
pub mod review;
pub mod server;
mod shape;
pub mod tls;
mod wire;

pub use review::{Caller, ReviewError, Reviewed, review, review_in_full, review_quick};
pub use wire::Endpoint;
