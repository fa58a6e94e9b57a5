//! The process's view of the cluster: what decisions may look up
//! ([`ClusterView`], and [`Snapshot`] for offline object sets), and the
//! live watch caches behind it that the webhook and the refresh controller
//! share ([`live`]).

pub mod live;
mod view;

pub use live::{Changed, LiveCluster, WorkloadKey};
pub use view::{ClusterView, NoCluster, Snapshot};
