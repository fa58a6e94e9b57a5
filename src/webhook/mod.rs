//! The admission webhook: translation between AdmissionReview and the
//! decision core. Nothing here decides.

pub mod review;

pub use review::{Endpoint, ReviewError, Reviewed, review};
