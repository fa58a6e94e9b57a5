//! The admission webhook: translation between AdmissionReview and the
//! decision core. Nothing here decides.

pub mod lean;
pub mod live;
pub mod metrics;
pub mod review;
pub mod server;
pub mod tls;

pub use review::{Endpoint, ReviewError, Reviewed, review};
