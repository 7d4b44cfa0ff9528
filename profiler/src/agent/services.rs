//! Which service a process belongs to, in this order: configured rules;
//! the Kubernetes namespace and container; the systemd unit; for
//! interpreters (python, node, java) the script, module or jar they run;
//! the executable's name. Also decides which processes are profiled at all.

use std::collections::BTreeMap;

use super::config::{Matcher, ServiceRule};
use super::process_info::ProcessInfo;

/// A service: the name profiles are pushed under, plus the labels that say
/// where it runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    pub name: String,
    /// Series labels besides `service_name` (namespace, pod, container...).
    pub labels: BTreeMap<String, String>,
}

const MAX_NAME: usize = 128;

/// The service of `info`.
pub fn infer(info: &ProcessInfo, rules: &[ServiceRule]) -> Service {
    let mut labels = BTreeMap::new();
    if let Some(container) = &info.container {
        labels.insert("container_id".to_owned(), container.id[..12].to_owned());
    }
    let k8s = info.kubernetes.as_ref();
    if let Some(k8s) = k8s {
        for (key, value) in [
            ("namespace", &k8s.namespace),
            ("pod", &k8s.pod),
            ("container", &k8s.container),
        ] {
            if let Some(value) = value {
                labels.insert(key.to_owned(), value.clone());
            }
        }
    }
    for (label, value) in &info.otel.labels {
        labels.insert((*label).to_owned(), value.clone());
    }
    let rule = rules.iter().find(|rule| matches(&rule.matcher, info, None));
    for (label, value) in rule.iter().flat_map(|r| r.labels.iter()) {
        labels.insert((*label).to_owned(), value.clone());
    }
    let name = rule
        .map(|rule| rule.name.clone())
        .or_else(|| info.otel.service_name.clone())
        .or_else(|| k8s.and_then(kubernetes_service))
        .or_else(|| systemd_unit(&info.cgroup))
        .or_else(|| interpreted_program(info))
        .unwrap_or_else(|| info.exe_name().to_owned());
    Service {
        name: clean(&name),
        labels,
    }
}

/// `namespace/container` (the Grafana Alloy convention); without the
/// container name, the pod name without its generated suffixes.
fn kubernetes_service(k8s: &super::process_info::KubernetesNames) -> Option<String> {
    let workload = match (&k8s.container, &k8s.pod) {
        (Some(container), _) => container.clone(),
        (None, Some(pod)) => pod_workload(pod),
        (None, None) => return None,
    };
    Some(match &k8s.namespace {
        Some(ns) => format!("{ns}/{workload}"),
        None => workload,
    })
}

/// `api-7d9f8b6c4-x2k9z` -> `api` (Deployment), `db-0` -> `db` (StatefulSet).
fn pod_workload(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    let generated = |s: &str, lens: &[usize]| {
        lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    let mut keep = parts.len();
    if keep > 2 && generated(parts[keep - 1], &[5]) && generated(parts[keep - 2], &[8, 9, 10]) {
        keep -= 2;
    } else if keep > 1 && parts[keep - 1].bytes().all(|b| b.is_ascii_digit()) {
        keep -= 1;
    }
    parts[..keep].join("-")
}

/// The service unit a process runs in (`nginx` for `.../nginx.service`),
/// not the per-user manager or a login session.
fn systemd_unit(cgroup: &str) -> Option<String> {
    cgroup.rsplit('/').find_map(|segment| {
        let unit = segment.strip_suffix(".service")?;
        (!unit.starts_with("user@") && !unit.is_empty()).then(|| unit.to_owned())
    })
}

/// For python, node and java: what they run rather than their own name.
fn interpreted_program(info: &ProcessInfo) -> Option<String> {
    let exe = info.exe_name();
    let args = info.cmdline.get(1..)?;
    if exe.starts_with("python") {
        python_program(args)
    } else if exe == "node" || exe == "nodejs" {
        script_program(args, &["-r", "--require", "--import", "--loader"])
    } else if exe == "java" {
        java_program(args)
    } else {
        None
    }
}

/// `python -m pkg.mod` -> `pkg.mod`; `python /srv/app/serve.py` -> `serve`;
/// `python /venv/bin/celery -A x worker` -> `celery`.
fn python_program(args: &[String]) -> Option<String> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-m" => return iter.next().cloned(),
            "-c" => return None,
            "-W" | "-X" | "--check-hash-based-pycs" => {
                iter.next();
            }
            a if a.starts_with("-m") && a.len() > 2 => return Some(a[2..].to_owned()),
            a if a.starts_with('-') => {}
            script => return script_name(script),
        }
    }
    None
}

/// The first argument that is not an option (skipping the values of
/// `with_value` options): the script.
fn script_program(args: &[String], with_value: &[&str]) -> Option<String> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if with_value.contains(&arg.as_str()) {
            iter.next();
        } else if !arg.starts_with('-') {
            return script_name(arg);
        }
    }
    None
}

/// `java -jar /opt/app.jar` -> `app`; `java -cp x com.acme.Main` -> `com.acme.Main`.
fn java_program(args: &[String]) -> Option<String> {
    let with_value = ["-cp", "-classpath", "--class-path", "-p", "--module-path"];
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-jar" => return iter.next().and_then(|jar| script_name(jar)),
            "-m" | "--module" => return iter.next().cloned(),
            a if with_value.contains(&a) => {
                iter.next();
            }
            a if a.starts_with('-') => {}
            class => return Some(class.to_owned()),
        }
    }
    None
}

/// A script's name without directory and extension; `__main__.py` and
/// `index.js` take their directory's name.
fn script_name(path: &str) -> Option<String> {
    let mut parts = path.rsplit('/').filter(|p| !p.is_empty());
    let file = parts.next()?;
    let stem = file.split('.').next().filter(|s| !s.is_empty())?;
    if matches!(stem, "__main__" | "index" | "main") {
        if let Some(dir) = parts.next() {
            return Some(dir.to_owned());
        }
    }
    Some(stem.to_owned())
}

/// Printable and bounded.
fn clean(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    if cleaned.is_empty() {
        "unknown".to_owned()
    } else {
        cleaned
    }
}

/// Whether every pattern of `m` matches. `service` patterns match the
/// inferred name (never during inference itself).
pub fn matches(m: &Matcher, info: &ProcessInfo, service: Option<&str>) -> bool {
    let container = || match &info.kubernetes {
        Some(k) => [&k.namespace, &k.pod, &k.container]
            .iter()
            .map(|v| v.as_deref().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("/"),
        None => info
            .container
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
    };
    let ok = |re: &Option<regex::Regex>, value: &dyn Fn() -> String| {
        re.as_ref().is_none_or(|re| re.is_match(&value()))
    };
    ok(&m.exe, &|| info.exe.clone())
        && ok(&m.comm, &|| info.comm.clone())
        && ok(&m.cmdline, &|| info.cmdline.join(" "))
        && ok(&m.cgroup, &|| info.cgroup.clone())
        && ok(&m.container, &container)
        && (m.service.is_none()
            || service.is_some_and(|s| m.service.as_ref().is_some_and(|re| re.is_match(s))))
}

/// Whether a process is profiled: not excluded, and included if any include
/// rule is configured.
pub fn selected(
    info: &ProcessInfo,
    service: &str,
    include: &[Matcher],
    exclude: &[Matcher],
) -> bool {
    let hit = |list: &[Matcher]| list.iter().any(|m| matches(m, info, Some(service)));
    (include.is_empty() || hit(include)) && !hit(exclude)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::process_info::{Container, KubernetesNames};

    fn process(exe: &str, cmdline: &[&str], cgroup: &str) -> ProcessInfo {
        ProcessInfo {
            pid: 1,
            exe: exe.into(),
            comm: exe.rsplit('/').next().unwrap().chars().take(15).collect(),
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            cgroup: cgroup.into(),
            container: None,
            kubernetes: None,
            otel: Default::default(),
            process_context: false,
        }
    }

    fn name(info: &ProcessInfo) -> String {
        infer(info, &[]).name
    }

    #[test]
    fn interpreters_take_their_program_name() {
        let py = "/usr/bin/python3.11";
        assert_eq!(
            name(&process(py, &["python3", "-u", "/srv/app/serve.py"], "")),
            "serve"
        );
        assert_eq!(
            name(&process(
                py,
                &["python3", "-X", "perf", "-m", "vllm.entrypoints.api"],
                ""
            )),
            "vllm.entrypoints.api"
        );
        assert_eq!(
            name(&process(
                py,
                &["/venv/bin/python", "/venv/bin/celery", "-A", "p", "worker"],
                ""
            )),
            "celery"
        );
        assert_eq!(
            name(&process(py, &["python3", "/srv/tool/__main__.py"], "")),
            "tool"
        );
        assert_eq!(
            name(&process(py, &["python3", "-c", "print(1)"], "")),
            "python3.11"
        );
        assert_eq!(
            name(&process(
                "/usr/bin/node",
                &["node", "--require", "x", "/app/server.js"],
                ""
            )),
            "server"
        );
        assert_eq!(
            name(&process(
                "/usr/bin/node",
                &["node", "/app/web/index.js"],
                ""
            )),
            "web"
        );
        assert_eq!(
            name(&process(
                "/opt/jdk/bin/java",
                &["java", "-Xmx1g", "-jar", "/opt/app/billing.jar"],
                ""
            )),
            "billing"
        );
        assert_eq!(
            name(&process(
                "/opt/jdk/bin/java",
                &["java", "-cp", "a.jar", "com.acme.Main"],
                ""
            )),
            "com.acme.Main"
        );
        assert_eq!(
            name(&process("/usr/local/bin/envoy", &["envoy", "-c", "x"], "")),
            "envoy"
        );
    }

    #[test]
    fn systemd_units_come_before_interpreters() {
        let p = process(
            "/usr/bin/python3",
            &["python3", "x.py"],
            "/system.slice/inference.service",
        );
        assert_eq!(name(&p), "inference");
        let session = process(
            "/usr/bin/python3",
            &["python3", "x.py"],
            "/user.slice/user-0.slice/session-3.scope",
        );
        assert_eq!(name(&session), "x");
        let manager = process(
            "/usr/bin/foo",
            &["foo"],
            "/user.slice/user-1000.slice/user@1000.service/init.scope",
        );
        assert_eq!(name(&manager), "foo");
    }

    #[test]
    fn kubernetes_names_the_namespace_and_container() {
        let mut p = process(
            "/usr/bin/python3",
            &["python3", "x.py"],
            "/kubepods.slice/x",
        );
        p.container = Some(Container {
            runtime: "containerd",
            id: "0123456789abcdef".repeat(4),
            pod_uid: Some("u".into()),
        });
        p.kubernetes = Some(KubernetesNames {
            namespace: Some("ml".into()),
            pod: Some("vllm-7d9f8b6c4-x2k9z".into()),
            container: None,
        });
        let service = infer(&p, &[]);
        assert_eq!(service.name, "ml/vllm");
        assert_eq!(service.labels["pod"], "vllm-7d9f8b6c4-x2k9z");
        assert_eq!(service.labels["container_id"], "0123456789ab");
        p.kubernetes.as_mut().unwrap().container = Some("server".into());
        assert_eq!(name(&p), "ml/server");
        assert_eq!(pod_workload("db-0"), "db");
        assert_eq!(pod_workload("web"), "web");
    }

    #[test]
    fn rules_win_and_filters_apply() {
        let rule = ServiceRule {
            name: "tokenizer".into(),
            matcher: Matcher {
                cmdline: Some(regex::Regex::new("tok[a-z]+\\.py").unwrap()),
                ..Matcher::default()
            },
            labels: Vec::new(),
        };
        let p = process(
            "/usr/bin/python3",
            &["python3", "tokenize.py"],
            "/system.slice/x.service",
        );
        assert_eq!(infer(&p, std::slice::from_ref(&rule)).name, "tokenizer");
        let exclude = Matcher {
            service: Some(regex::Regex::new("^tok").unwrap()),
            ..Matcher::default()
        };
        assert!(!selected(
            &p,
            "tokenizer",
            &[],
            std::slice::from_ref(&exclude)
        ));
        assert!(selected(&p, "other", &[], std::slice::from_ref(&exclude)));
        assert!(selected(
            &p,
            "other",
            std::slice::from_ref(&rule.matcher),
            &[]
        ));
    }
}
