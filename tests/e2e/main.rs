//! End to end against a real control plane: etcd, kube-apiserver and
//! kube-controller-manager from `KUBEBUILDER_ASSETS`, upgrade-guard installed
//! from `manifests/`, `serve` as the real process, kubectl as the user, and
//! the kubelet played through `pods/status`. Each test has a namespace of its
//! own and waits on what it sees, never on another test's timing.

#[path = "../common/mod.rs"]
mod common;

mod control_plane;
mod kubelet;
mod suite;

mod workloads;

mod crash;
mod data;
mod fate;
mod figures;
mod file_policy;
mod hooks;
mod install;
mod kyuubi;
mod leadership;
mod on_delete;
mod overrides;
mod protocol;
