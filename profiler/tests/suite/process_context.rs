//! The OpenTelemetry process context (OTEP 4719) as a real SDK publishes
//! it: dd-trace-go 2.12's tracer, in a Go service (testdata/gootelctx),
//! names the service in Pyroscope, above the process's OTEL_* variables.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::agent::{Agent, CPU_TYPE};
use crate::harness::{go_workload_with, is_root, Running};
use crate::pyroscope::{now_ms, Pyroscope};

#[test]
fn the_process_context_an_sdk_publishes_names_the_service() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let binary = go_workload_with("gootelctx", None, "");
    let config = format!(
        r#"
[server]
url = "{}"

[profiling]
window = "2s"
frequency = 49

[[processes.include]]
service = "^(ctx-checkout|env-checkout)$"
"#,
        server.url()
    );
    // The agent runs first: it sees the process before its tracer starts
    // (5 s of work first), and must look again when the context appears.
    let agent = Agent::start(&config);
    let (_service, lines) = Running::until_line_with_output(
        Command::new(&binary)
            .args(["120", "5000"])
            .env("OTEL_SERVICE_NAME", "env-checkout")
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "vcs.repository.url.full=https://github.com/acme/checkout",
            )
            .env("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
            .env("DD_TRACE_STARTUP_LOGS", "false")
            .stderr(Stdio::null()),
        "published",
    );
    drop(lines);
    // Published now: six windows more (twice the time before).
    let pushed = agent.metric("smolder_pushes_ok_total");
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(30), |v| {
        v >= pushed + 6.0
    });
    let (status, _) = agent.stop();
    assert!(status.success(), "agent exit: {status}");
    let range = (begin, now_ms() + 1000);
    let named = server.stacks(
        CPU_TYPE,
        r#"{service_name="ctx-checkout",service_version="3.1.4",deployment_environment="staging",service_repository="https://github.com/acme/checkout"}"#,
        range,
    );
    let before = server.stacks(CPU_TYPE, r#"{service_name="env-checkout"}"#, range);
    eprintln!(
        "named by the context: {} ns; by the environment (before the tracer started): {} ns",
        named.total, before.total
    );
    assert!(
        named.has_function("main.serve") && named.share_with(&["main.serve"]) >= 0.8,
        "{named:?}"
    );
    // The environment's name only until the context was seen: the 5 s
    // before publication and the window it came in.
    assert!(
        before.total > 0 && named.total > before.total,
        "context {} ns, environment {} ns",
        named.total,
        before.total
    );
}
