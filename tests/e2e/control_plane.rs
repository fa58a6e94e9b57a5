//! A real control plane on loopback: etcd, kube-apiserver and
//! kube-controller-manager from a directory of binaries named by
//! `KUBEBUILDER_ASSETS` (envtest's convention; etcd may also come from the
//! PATH, as Debian's `etcd-server` installs it). The flags are those of
//! `shared/k8s/README.md`; certificates are made here with rcgen.
//!
//! Every process is started with `PR_SET_PDEATHSIG`, from a thread that
//! lives as long as the test process, so nothing outlives the suite.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

pub const ASSETS: &str = "KUBEBUILDER_ASSETS";

/// Where to get the binaries, said once when the suite is skipped.
pub const HOW_TO_GET: &str = "set KUBEBUILDER_ASSETS to a directory holding kube-apiserver and \
     kube-controller-manager (unpack ../shared/k8s/*.xz, as .ci/run does) and etcd \
     (there or on the PATH: apt-get install etcd-server)";

/// The three binaries, found or named as missing.
#[derive(Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
}

impl Binaries {
    pub fn find(assets: &Path) -> Result<Binaries, String> {
        let in_assets = |name: &str| {
            let path = assets.join(name);
            path.is_file().then_some(path)
        };
        let on_path = |name: &str| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        };
        let missing = |name: &str| format!("{name} is not in {} ({HOW_TO_GET})", assets.display());
        Ok(Binaries {
            etcd: in_assets("etcd")
                .or_else(|| on_path("etcd"))
                .ok_or_else(|| missing("etcd"))?,
            apiserver: in_assets("kube-apiserver").ok_or_else(|| missing("kube-apiserver"))?,
            controller_manager: in_assets("kube-controller-manager")
                .ok_or_else(|| missing("kube-controller-manager"))?,
        })
    }
}

/// A running control plane. Its processes die with the test process.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub server: String,
    /// A kubeconfig for `system:masters`.
    pub admin: PathBuf,
    controller_manager: Option<Child>,
    controller_manager_args: Vec<String>,
    controller_manager_bin: PathBuf,
    processes: Vec<(&'static str, Child)>,
}

/// A free loopback port (bound, then released for the process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts `program` so that it is killed when the starting thread ends.
pub fn spawn(program: &Path, args: &[String], log: &Path, env: &[(&str, &str)]) -> Child {
    let out = File::create(log).expect("a log file");
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("a log file"))
        .stderr(out);
    for proxy in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        command.env_remove(proxy);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn("e2e-ca", None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// (certificate, key) PEMs for a server (with SANs) or a client (CN, O).
    fn issue(&self, cn: &str, org: Option<&str>, sans: &[&str], server: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = dn(cn, org);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A kubeconfig for `server` with a client certificate or a bearer token.
pub fn kubeconfig(dir: &Path, name: &str, server: &str, ca: &Path, user: &str) -> PathBuf {
    write(
        dir,
        name,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n{user}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: u}}\ncurrent-context: e2e\n",
            ca.display()
        ),
    )
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver, then the controller-manager once the
    /// API server answers; returns when `/readyz` says ok.
    pub fn start(bins: &Binaries, dir: &Path) -> ControlPlane {
        let pki = Pki::new();
        let ca = write(dir, "ca.crt", &pki.ca.pem());
        let ca_key = write(dir, "ca.key", &pki.ca.key().serialize_pem());
        let (cert, key) = pki.issue("kube-apiserver", None, &["127.0.0.1", "localhost"], true);
        let serving_cert = write(dir, "apiserver.crt", &cert);
        let serving_key = write(dir, "apiserver.key", &key);
        let sa = KeyPair::generate().unwrap();
        let sa_key = write(dir, "sa.key", &sa.serialize_pem());
        let sa_pub = write(dir, "sa.pub", &sa.public_key_pem());
        let client = |cn: &str, org: Option<&str>, file: &str| {
            let (cert, key) = pki.issue(cn, org, &[], false);
            let cert = write(dir, &format!("{file}.crt"), &cert);
            let key = write(dir, &format!("{file}.key"), &key);
            format!(
                "    client-certificate: {}\n    client-key: {}",
                cert.display(),
                key.display()
            )
        };
        let admin_user = client("e2e-admin", Some("system:masters"), "admin");
        let kcm_user = client("system:kube-controller-manager", None, "kcm");

        let (etcd_port, peer_port, api_port, kcm_port) =
            (free_port(), free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let s = |v: &str| v.to_string();
        let etcd = spawn(
            &bins.etcd,
            &[
                s("--data-dir"),
                dir.join("etcd").display().to_string(),
                s("--listen-client-urls"),
                etcd_url.clone(),
                s("--advertise-client-urls"),
                etcd_url.clone(),
                s("--listen-peer-urls"),
                peer_url.clone(),
                s("--initial-advertise-peer-urls"),
                peer_url.clone(),
                s("--initial-cluster"),
                format!("e2e={peer_url}"),
                s("--name"),
                s("e2e"),
            ],
            &dir.join("etcd.log"),
            &[],
        );
        let server = format!("https://127.0.0.1:{api_port}");
        let apiserver = spawn(
            &bins.apiserver,
            &[
                s("--bind-address=127.0.0.1"),
                s("--advertise-address=127.0.0.1"),
                format!("--secure-port={api_port}"),
                format!("--etcd-servers={etcd_url}"),
                format!("--tls-cert-file={}", serving_cert.display()),
                format!("--tls-private-key-file={}", serving_key.display()),
                format!("--client-ca-file={}", ca.display()),
                s("--authorization-mode=Node,RBAC"),
                s(
                    "--enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                ),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
                s("--service-cluster-ip-range=10.96.0.0/12"),
                s("--endpoint-reconciler-type=none"),
            ],
            &dir.join("kube-apiserver.log"),
            &[],
        );
        let admin = kubeconfig(dir, "admin.kubeconfig", &server, &ca, &admin_user);
        let kcm_config = kubeconfig(dir, "kcm.kubeconfig", &server, &ca, &kcm_user);
        let kcm_config = kcm_config.display().to_string();
        let controller_manager_args = vec![
            format!("--kubeconfig={kcm_config}"),
            format!("--authentication-kubeconfig={kcm_config}"),
            format!("--authorization-kubeconfig={kcm_config}"),
            s("--bind-address=127.0.0.1"),
            format!("--secure-port={kcm_port}"),
            s("--controllers=*"),
            s("--use-service-account-credentials=true"),
            format!("--service-account-private-key-file={}", sa_key.display()),
            format!("--root-ca-file={}", ca.display()),
            format!("--cluster-signing-cert-file={}", ca.display()),
            format!("--cluster-signing-key-file={}", ca_key.display()),
            s("--leader-elect=false"),
        ];
        let mut plane = ControlPlane {
            dir: dir.to_path_buf(),
            server,
            admin,
            controller_manager: None,
            controller_manager_args,
            controller_manager_bin: bins.controller_manager.clone(),
            processes: vec![("etcd", etcd), ("kube-apiserver", apiserver)],
        };
        plane.wait(
            "the API server to answer /version",
            Duration::from_secs(60),
            |p| p.get("/version").is_some(),
        );
        plane.start_controller_manager();
        plane.wait("the API server to be ready", Duration::from_secs(60), |p| {
            p.get("/readyz").as_deref() == Some("ok")
        });
        plane
    }

    fn start_controller_manager(&mut self) {
        self.controller_manager = Some(spawn(
            &self.controller_manager_bin,
            &self.controller_manager_args,
            &self.dir.join("kube-controller-manager.log"),
            &[],
        ));
    }

    /// Starts the controller-manager again if it exited (it gives up when
    /// the API server is slow to come up).
    pub fn keep_controller_manager(&mut self) {
        let exited = self
            .controller_manager
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            self.start_controller_manager();
        }
    }

    /// A GET as admin through kubectl's raw mode: the body, or None.
    pub fn get(&self, path: &str) -> Option<String> {
        let out = Command::new("kubectl")
            .args(["--kubeconfig"])
            .arg(&self.admin)
            .args(["get", "--raw", path])
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Polls `ready` (keeping the controller-manager up) until it holds.
    pub fn wait(&mut self, what: &str, within: Duration, ready: impl Fn(&ControlPlane) -> bool) {
        let start = Instant::now();
        while !ready(self) {
            for (name, child) in &mut self.processes {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                        .unwrap_or_default();
                    let last: Vec<&str> = log.lines().rev().take(5).collect();
                    panic!(
                        "{name} exited ({status}) while waiting for {what}: {}",
                        last.join("\n")
                    );
                }
            }
            assert!(
                start.elapsed() < within,
                "waited {within:?} for {what}; logs in {}",
                self.dir.display()
            );
            if self.controller_manager.is_some() {
                self.keep_controller_manager();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
