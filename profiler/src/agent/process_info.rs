//! What the agent knows about a process, read from `/proc` as untrusted
//! input: sizes are capped, bytes that are not UTF-8 are replaced, and a
//! process that is gone yields what could be read.

use std::io::Read;
use std::path::Path;

use super::otel_resource::{self, OtelResource};
use super::process_context;

/// Caps on what is read from one process.
const MAX_CMDLINE: u64 = 16 << 10;
/// Of the environment, only OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
/// are kept; variables past this many bytes are not seen.
const MAX_ENVIRON: u64 = 128 << 10;
const MAX_CGROUP: u64 = 8 << 10;
const MAX_SMALL_FILE: u64 = 256;

/// A container the process runs in, from its cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub runtime: &'static str,
    /// Full container id (hex).
    pub id: String,
    /// Kubernetes pod UID, when under `kubepods`.
    pub pod_uid: Option<String>,
}

/// Kubernetes names of a container, when they could be found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubernetesNames {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Path of the executable (`" (deleted)"` removed), or empty.
    pub exe: String,
    pub comm: String,
    pub cmdline: Vec<String>,
    /// The unified (v2) cgroup path, or the systemd/v1 one.
    pub cgroup: String,
    pub container: Option<Container>,
    pub kubernetes: Option<KubernetesNames>,
    /// What the process says it is: its OpenTelemetry process context over
    /// its OpenTelemetry variables.
    pub otel: OtelResource,
    /// Whether it published a process context (OTEP 4719).
    pub process_context: bool,
}

impl ProcessInfo {
    /// Reads what it can of `pid` under `proc_root` (normally `/proc`);
    /// `comm` is the name the sampler saw, kept if /proc has none.
    pub fn read(proc_root: &Path, pid: u32, comm: &str) -> Self {
        let dir = proc_root.join(pid.to_string());
        let exe = std::fs::read_link(dir.join("exe"))
            .map(|p| {
                let p = p.to_string_lossy().into_owned();
                p.strip_suffix(" (deleted)").map(str::to_owned).unwrap_or(p)
            })
            .unwrap_or_default();
        let cmdline = read_capped(&dir.join("cmdline"), MAX_CMDLINE)
            .map(|bytes| parse_cmdline(&bytes))
            .unwrap_or_default();
        let proc_comm = read_capped(&dir.join("comm"), MAX_SMALL_FILE)
            .map(|b| String::from_utf8_lossy(&b).trim_end().to_owned())
            .unwrap_or_default();
        let cgroup = read_capped(&dir.join("cgroup"), MAX_CGROUP)
            .map(|b| cgroup_path(&String::from_utf8_lossy(&b)))
            .unwrap_or_default();
        let container = container_of(&cgroup);
        let environment = read_capped(&dir.join("environ"), MAX_ENVIRON)
            .map(|bytes| otel_resource::from_environ(&bytes))
            .unwrap_or_default();
        let context = process_context::read(&dir, pid);
        let process_context = context.is_some();
        let otel = match context {
            Some(context) => context.over(environment),
            None => environment,
        };
        let kubernetes = container
            .as_ref()
            .filter(|c| c.pod_uid.is_some())
            .map(|c| kubernetes_names(&dir, &c.id));
        Self {
            pid,
            exe,
            comm: if proc_comm.is_empty() {
                comm.to_owned()
            } else {
                proc_comm
            },
            cmdline,
            cgroup,
            container,
            kubernetes,
            otel,
            process_context,
        }
    }

    /// The executable's file name, else the comm.
    pub fn exe_name(&self) -> &str {
        self.exe
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.comm)
    }
}

/// The arguments in `/proc/PID/cmdline` (NUL-separated; empty ones
/// dropped, bytes that are not UTF-8 replaced).
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn read_capped(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The cgroup path from `/proc/PID/cgroup`: the unified `0::` line, else
/// the systemd v1 hierarchy, else the first line's.
pub fn cgroup_path(text: &str) -> String {
    let paths: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?, parts.next()?))
        })
        .collect();
    let pick = |want: &str| {
        paths
            .iter()
            .find(|(controllers, path)| *controllers == want && *path != "/")
    };
    pick("")
        .or_else(|| pick("name=systemd"))
        .or_else(|| paths.iter().find(|(_, p)| *p != "/"))
        .map(|(_, p)| (*p).to_owned())
        .unwrap_or_default()
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Container runtime, id and pod from a cgroup path: systemd driver
/// (`cri-containerd-ID.scope`, `crio-ID.scope`, `docker-ID.scope`) or
/// cgroupfs driver (`/kubepods/burstable/podUID/ID`, `/docker/ID`).
pub fn container_of(cgroup: &str) -> Option<Container> {
    let segments: Vec<&str> = cgroup.split('/').filter(|s| !s.is_empty()).collect();
    let last = *segments.last()?;
    let scoped = [
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
    ]
    .iter()
    .find_map(|(prefix, runtime)| {
        let id = last.strip_prefix(prefix)?.strip_suffix(".scope")?;
        is_container_id(id).then(|| (*runtime, id.to_owned()))
    });
    let in_kubepods = segments.iter().any(|s| s.starts_with("kubepods"));
    let (runtime, id) = match scoped {
        Some(found) => found,
        None if is_container_id(last) => {
            let runtime = if segments.contains(&"docker") {
                "docker"
            } else if in_kubepods {
                "kubernetes"
            } else {
                return None;
            };
            (runtime, last.to_owned())
        }
        None => return None,
    };
    let pod_uid = in_kubepods
        .then(|| {
            segments.iter().find_map(|s| {
                // kubepods-burstable-pod<uid with _>.slice or pod<uid>
                let s = s.strip_suffix(".slice").unwrap_or(s);
                let at = s.rfind("pod")?;
                let uid = &s[at + 3..];
                (uid.len() >= 32).then(|| uid.replace('_', "-"))
            })
        })
        .flatten();
    Some(Container {
        runtime,
        id,
        pod_uid,
    })
}

/// Names of a Kubernetes container: from the node's `/var/log/containers`
/// links (`POD_NAMESPACE_CONTAINER-ID.log`, kept by the kubelet), else the
/// pod's hostname (its name) and service-account namespace.
fn kubernetes_names(proc_dir: &Path, container_id: &str) -> KubernetesNames {
    if let Some(names) = names_from_log_links(Path::new("/var/log/containers"), container_id) {
        return names;
    }
    let small = |rel: &str| {
        read_capped(&proc_dir.join("root").join(rel), MAX_SMALL_FILE)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    KubernetesNames {
        namespace: small("var/run/secrets/kubernetes.io/serviceaccount/namespace"),
        pod: small("etc/hostname"),
        container: None,
    }
}

pub fn names_from_log_links(dir: &Path, container_id: &str) -> Option<KubernetesNames> {
    let suffix = format!("-{container_id}.log");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name();
        let name = name.to_str()?;
        let rest = name.strip_suffix(&suffix)?;
        let mut parts = rest.splitn(3, '_');
        let pod = parts.next()?;
        let namespace = parts.next()?;
        let container = parts.next()?;
        Some(KubernetesNames {
            namespace: Some(namespace.to_owned()),
            pod: Some(pod.to_owned()),
            container: Some(container.to_owned()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn picks_the_unified_cgroup() {
        let text =
            "12:memory:/x\n1:name=systemd:/system.slice/a.service\n0::/system.slice/b.service\n";
        assert_eq!(cgroup_path(text), "/system.slice/b.service");
        assert_eq!(
            cgroup_path("1:name=systemd:/user.slice\n0::/\n"),
            "/user.slice"
        );
        assert_eq!(cgroup_path("garbage"), "");
    }

    #[test]
    fn finds_containers_of_each_runtime() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-{ID}.scope"
        );
        let c = container_of(&systemd).unwrap();
        assert_eq!((c.runtime, c.id.as_str()), ("containerd", ID));
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("1b2c3d4e-0000-1111-2222-333344445555")
        );
        let crio = format!("/kubepods.slice/kubepods-pod1b2c3d4e_0000_1111_2222_333344445555.slice/crio-{ID}.scope");
        assert_eq!(container_of(&crio).unwrap().runtime, "cri-o");
        let cgroupfs = format!("/kubepods/besteffort/pod1b2c3d4e-0000-1111-2222-333344445555/{ID}");
        let c = container_of(&cgroupfs).unwrap();
        assert_eq!(c.runtime, "kubernetes");
        assert!(c.pod_uid.is_some());
        let docker = container_of(&format!("/system.slice/docker-{ID}.scope")).unwrap();
        assert_eq!((docker.runtime, docker.pod_uid), ("docker", None));
        assert_eq!(
            container_of(&format!("/docker/{ID}")).unwrap().runtime,
            "docker"
        );
        assert_eq!(container_of("/system.slice/nginx.service"), None);
        assert_eq!(container_of("/user.slice/docker-notanid.scope"), None);
    }

    #[test]
    fn reads_names_from_kubelet_log_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path()
                .join(format!("vllm-7d9f8b6c4-x2k9z_ml_server-{ID}.log")),
            "",
        )
        .unwrap();
        std::fs::write(dir.path().join("other_ns_c-ffff.log"), "").unwrap();
        let names = names_from_log_links(dir.path(), ID).unwrap();
        assert_eq!(names.namespace.as_deref(), Some("ml"));
        assert_eq!(names.pod.as_deref(), Some("vllm-7d9f8b6c4-x2k9z"));
        assert_eq!(names.container.as_deref(), Some("server"));
        assert_eq!(names_from_log_links(dir.path(), "abc"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = ProcessInfo::read(Path::new("/proc"), std::process::id(), "x");
        assert!(!me.exe.is_empty());
        assert!(!me.cmdline.is_empty());
        let gone = ProcessInfo::read(Path::new("/proc"), u32::MAX, "ghost");
        assert_eq!((gone.comm.as_str(), gone.exe_name()), ("ghost", "ghost"));
    }
}
