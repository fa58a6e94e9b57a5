//! FATE-like: a Deployment with a claim migrated live to a StatefulSet by
//! `upgrade-guard migrate`, its PersistentVolume never deleted and bound
//! again, while status writes keep moving the Deployment's
//! resourceVersion; then `migrate --rollback`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, Patch, PatchParams};

use crate::suite::{eventually, suite, text};
use crate::workloads::wait_rolled_out;

fn objects(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv-{ns}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: manual
  hostPath: {{path: /tmp/{ns}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: mysql-data, namespace: {ns}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeName: pv-{ns}
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: mysql
  namespace: {ns}
  labels: {{app.kubernetes.io/name: mysql, app.kubernetes.io/part-of: fate}}
spec:
  replicas: 1
  strategy: {{type: Recreate}}
  selector: {{matchLabels: {{app.kubernetes.io/name: mysql}}}}
  template:
    metadata: {{labels: {{app.kubernetes.io/name: mysql}}}}
    spec:
      containers:
        - name: mysql
          image: fate/mysql:1.7.0
          volumeMounts: [{{name: data, mountPath: /var/lib/mysql}}]
      volumes:
        - name: data
          persistentVolumeClaim: {{claimName: mysql-data}}
"#
    )
}

/// (UID, phase, claim it is bound to, reclaim policy) of the volume.
async fn volume(pvs: &Api<PersistentVolume>, name: &str) -> (String, String, String, String) {
    let pv = pvs.get(name).await.unwrap();
    let spec = pv.spec.unwrap_or_default();
    (
        pv.metadata.uid.unwrap_or_default(),
        pv.status.and_then(|s| s.phase).unwrap_or_default(),
        spec.claim_ref.and_then(|c| c.name).unwrap_or_default(),
        spec.persistent_volume_reclaim_policy.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_keeps_the_volume_through_status_churn_and_rolls_back() {
    let Some(s) = suite() else { return };
    let ns = s.namespace("fate").await;
    let client = s.client().await;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = format!("pv-{ns}");
    s.apply(&ns, &objects(&ns));
    wait_rolled_out(s, &ns, "deployment/mysql").await;
    let bound = eventually("the claim to bind", 60, || async {
        let v = volume(&pvs, &pv).await;
        (v.1 == "Bound").then_some(v)
    })
    .await;
    assert_eq!(
        (bound.2.as_str(), bound.3.as_str()),
        ("mysql-data", "Delete")
    );

    // Status writes while it runs, as the Deployment controller's and more.
    let churning = Arc::new(AtomicBool::new(true));
    let churn = {
        let (churning, deployments) = (
            churning.clone(),
            Api::<Deployment>::namespaced(client.clone(), &ns),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while churning.load(Ordering::Relaxed) {
                n += 1;
                let patch = serde_json::json!({"status": {"observedGeneration": n % 2}});
                let _ = deployments
                    .patch_status("mysql", &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            n
        })
    };
    let migrated = s.ug(&["migrate", &format!("{ns}/mysql"), "--yes"]);
    churning.store(false, Ordering::Relaxed);
    let writes = churn.await.unwrap();
    eprintln!(
        "MIGRATE {} / {} / {writes}",
        text(&migrated.stdout),
        text(&migrated.stderr)
    );
    assert!(migrated.status.success());
    let after = eventually(
        "the volume bound to the StatefulSet's claim",
        60,
        || async {
            let v = volume(&pvs, &pv).await;
            (v.1 == "Bound" && v.2 != "mysql-data").then_some(v)
        },
    )
    .await;
    assert_eq!(
        after,
        (
            bound.0.clone(),
            "Bound".into(),
            "data-mysql-0".into(),
            "Retain".into()
        ),
        "the same volume (never deleted), bound to the StatefulSet's claim, kept on release"
    );
    wait_rolled_out(s, &ns, "statefulset/mysql").await;

    let back = s.ug(&["migrate", &format!("{ns}/mysql",), "--rollback", "--yes"]);
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert_eq!(
        text(&back.stdout),
        format!("Deployment {ns}/mysql rolled back")
    );
    let restored = eventually(
        "the volume bound to the Deployment's claim again",
        60,
        || async {
            let v = volume(&pvs, &pv).await;
            (v.1 == "Bound" && v.2 == "mysql-data").then_some(v)
        },
    )
    .await;
    assert_eq!(restored, bound);
    wait_rolled_out(s, &ns, "deployment/mysql").await;
}
