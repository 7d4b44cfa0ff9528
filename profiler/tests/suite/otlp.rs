//! The OTLP exporter against the real Pyroscope's OTLP endpoint
//! (`/v1development/profiles`): the same processes profiled at once by an
//! agent on Pyroscope's push API and by one speaking OTLP, each under its
//! own service name, and what Pyroscope stored from each compared.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::agent::{one_service_config, Agent, CPU_TYPE, OFF_CPU_TYPE};
use crate::harness::{is_root, machine_python, python_trace_sdk, Running};
use crate::pyroscope::{now_ms, FlameGraph, Pyroscope};
use crate::trace_context::{CHECKOUT, SEARCH};

const RULE: &str = r#"cmdline = "testdata/python/trace_requests.py""#;

/// Half the sum of absolute differences between two graphs' shares of each
/// key (`key` of a stack, root first): 0 when they agree, 1 when they share
/// nothing.
fn distance(a: &FlameGraph, b: &FlameGraph, key: impl Fn(&[String]) -> String) -> f64 {
    let shares = |g: &FlameGraph| {
        let mut by_key: HashMap<String, f64> = HashMap::new();
        for (stack, value) in &g.stacks {
            *by_key.entry(key(stack)).or_default() += *value as f64 / g.total.max(1) as f64;
        }
        by_key
    };
    let (a, b) = (shares(a), shares(b));
    let mut sum = 0.0;
    for (stack, share) in &a {
        sum += (share - b.get(stack).copied().unwrap_or(0.0)).abs();
    }
    for (stack, share) in &b {
        if !a.contains_key(stack) {
            sum += share;
        }
    }
    sum / 2.0
}

fn agent(server: &Pyroscope, protocol: &str, service: &str) -> Agent {
    let config = one_service_config(
        &format!("url = \"{}\"\nprotocol = \"{protocol}\"", server.url()),
        "window = \"2s\"\nfrequency = 499\noff_cpu = true",
        service,
        RULE,
    ) + "\n[labels]\nteam = \"search\"\n";
    Agent::start(&config)
}

#[test]
fn otlp_profiles_reach_pyroscope_as_the_push_path_does() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/python/trace_requests.py");
    // Requests that compute (on-CPU) and requests that sleep (off-CPU).
    let requests = |mode: &[&str]| {
        Running::spawn(
            Command::new(machine_python())
                .arg(&script)
                .args(["120", "manual"])
                .args(mode)
                .env("PYTHONPATH", python_trace_sdk())
                .env(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "service.version=2.1.0,vcs.repository.url.full=https://github.com/acme/api",
                )
                .stdout(Stdio::null()),
            Duration::from_millis(500),
        )
    };
    let _computing = requests(&[]);
    let _sleeping = requests(&["sleep"]);
    let push = agent(&server, "pyroscope", "smolder-test-push");
    let otlp = agent(&server, "otlp", "smolder-test-otlp");
    for agent in [&push, &otlp] {
        agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(60), |v| {
            v >= 4.0
        });
    }
    let (status, log) = otlp.stop();
    assert!(status.success(), "OTLP agent exit: {status}");
    assert!(log.contains("pushing to"), "{log}");
    let (status, _) = push.stop();
    assert!(status.success(), "push agent exit: {status}");
    let range = (begin, now_ms() + 1000);
    let selector = |service: &str| format!(r#"{{service_name="{service}"}}"#);

    // The same flame graph: two samplers of the same processes, so equal
    // up to sampling noise.
    let by_push = server.stacks(CPU_TYPE, &selector("smolder-test-push"), range);
    let by_otlp = server.stacks(CPU_TYPE, &selector("smolder-test-otlp"), range);
    assert!(by_otlp.total > 0, "nothing stored from OTLP");
    for graph in [&by_push, &by_otlp] {
        assert!(
            graph.has_function("checkout") && graph.has_function("search"),
            "{graph:?}"
        );
    }
    let apart = distance(&by_push, &by_otlp, |stack| stack.join(";"));
    let leaves_apart = distance(&by_push, &by_otlp, |stack| {
        stack.last().cloned().unwrap_or_default()
    });
    eprintln!(
        "on-CPU: push {} ns, OTLP {} ns, {} and {} stacks, {apart:.3} apart by stack, {leaves_apart:.3} by leaf",
        by_push.total,
        by_otlp.total,
        by_push.stacks.len(),
        by_otlp.stacks.len()
    );
    assert!(
        apart <= 0.15 && leaves_apart <= 0.08,
        "flame graphs {apart:.3} apart by stack, {leaves_apart:.3} by leaf:\npush {:?}\nOTLP {:?}",
        by_push.heaviest(|_| true, 15),
        by_otlp.heaviest(|_| true, 15)
    );
    for function in ["checkout", "search"] {
        let (a, b) = (
            by_push.share_with(&[function]),
            by_otlp.share_with(&[function]),
        );
        assert!(
            (a - b).abs() <= 0.08,
            "{function}: push {a:.3}, OTLP {b:.3}"
        );
    }

    // Off-CPU: the same type name as the push path, and the blocked time
    // spread over the same places (the agents ran over different spans of
    // time, so totals are not compared).
    let blocked_push = server.stacks(OFF_CPU_TYPE, &selector("smolder-test-push"), range);
    let blocked_otlp = server.stacks(OFF_CPU_TYPE, &selector("smolder-test-otlp"), range);
    eprintln!(
        "off-CPU: push {} ns, OTLP {} ns",
        blocked_push.total, blocked_otlp.total
    );
    assert!(blocked_otlp.total > 0, "no off-CPU data from OTLP");
    for function in ["checkout", "search", "between_requests"] {
        let (a, b) = (
            blocked_push.share_with(&[function]),
            blocked_otlp.share_with(&[function]),
        );
        assert!(
            (a - b).abs() <= 0.08,
            "off-CPU in {function}: push {a:.3}, OTLP {b:.3}"
        );
    }

    // Trace contexts travel as links: span profiles work from OTLP data.
    for (span, own, other) in [
        (CHECKOUT.1, "checkout", "search"),
        (SEARCH.1, "search", "checkout"),
    ] {
        let graph = server.span_stacks(CPU_TYPE, &selector("smolder-test-otlp"), &[span], range);
        let share = graph.share_with(&[own]);
        assert!(
            share >= 0.95 && !graph.has_function(other),
            "span {span}: {:.1}% in {own}: {graph:?}",
            share * 100.0
        );
    }

    // Resource attributes: the process's own (OTEL_RESOURCE_ATTRIBUTES) and
    // the agent's static labels are series labels of the OTLP data.
    let labelled = server.stacks(
        CPU_TYPE,
        r#"{service_name="smolder-test-otlp",service_version="2.1.0",service_repository="https://github.com/acme/api",team="search"}"#,
        range,
    );
    assert_eq!(
        labelled.total, by_otlp.total,
        "labels missing from the OTLP series"
    );
}
