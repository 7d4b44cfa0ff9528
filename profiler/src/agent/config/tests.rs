//! Unit tests of the configuration layers and checks.

use super::*;

fn from(text: &str, layers: &[Overrides]) -> Result<AgentConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    load(Some(&path), layers)
}

#[test]
fn defaults_write_local_files_at_19_hz() {
    let c = load(None, &[]).unwrap();
    assert_eq!((c.frequency.get(), c.window), (19, Duration::from_secs(15)));
    assert!(c.off_cpu.is_none());
    assert!(matches!(c.sink, Sink::Directory(ref d) if d.path == Path::new(DEFAULT_OUTPUT_DIR)));
    assert!(c.labels.contains_key("host_name"));
    assert_eq!(c.metrics_address, None, "no listener unless configured");
}

#[test]
fn layers_apply_in_order_and_errors_say_where_from() {
    let mut env = Overrides::default();
    env.set("profiling.frequency", "49", "SMOLDER_FREQUENCY");
    let mut flags = Overrides::default();
    flags.set("profiling.frequency", "97", "--frequency");
    let c = from("[profiling]\nfrequency = 29\n", &[env]).unwrap();
    assert_eq!(c.frequency.get(), 49);
    let mut env = Overrides::default();
    env.set("profiling.frequency", "49", "SMOLDER_FREQUENCY");
    let c = from("[profiling]\nfrequency = 29\n", &[env, flags]).unwrap();
    assert_eq!(c.frequency.get(), 97);
    let err = from("[profiling]\nfrequency = 0\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("profiling.frequency (from config file "),
        "{err}"
    );
    let mut bad = Overrides::default();
    bad.set("profiling.window", "soon", "--window");
    let err = from("", &[bad]).unwrap_err().to_string();
    assert!(err.contains("profiling.window (from --window)"), "{err}");
}

#[test]
fn server_rules() {
    let c = from(
        "[server]\nurl = \"http://127.0.0.1:4040\"\ntenant = \"t\"\n",
        &[],
    )
    .unwrap();
    let Sink::Server { server, spool } = c.sink else {
        panic!("not a server sink")
    };
    assert_eq!(server.tenant.as_deref(), Some("t"));
    assert_eq!(server.protocol, Protocol::Pyroscope);
    assert_eq!(spool.path, Path::new(DEFAULT_SPOOL_DIR));
    let c = from(
        "[server]\nurl = \"http://127.0.0.1:4318\"\nprotocol = \"otlp\"\n",
        &[],
    )
    .unwrap();
    let Sink::Server { server, .. } = c.sink else {
        panic!("not a server sink")
    };
    assert_eq!(server.protocol, Protocol::Otlp);
    let err = from(
        "[server]\nurl = \"http://127.0.0.1:4318\"\nprotocol = \"grpc\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("server.protocol") && err.contains("`grpc`"),
        "{err}"
    );
    assert!(from("[server]\nurl = \"http://[::1]:4040\"\n", &[]).is_ok());
    assert!(from(
        "[server]\nurl = \"http://remote:4040\"\ninsecure_http = true\n",
        &[]
    )
    .is_ok());
    let err = from("[server]\nurl = \"https://u:p@remote\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("credentials in the URL"), "{err}");
    let err = from("[server]\ntenant = \"t\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.url"), "{err}");
    let mut env = Overrides::default();
    env.set("server.bearer_token", "tok", "SMOLDER_BEARER_TOKEN");
    let c = from("[server]\nurl = \"https://remote\"\n", &[env]).unwrap();
    let Sink::Server { server, .. } = c.sink else {
        panic!()
    };
    assert_eq!(server.auth, Auth::Bearer(Secret("tok".into())));
    assert!(
        !format!("{server:?}").contains("tok\""),
        "secret in Debug output"
    );
    let err = from(
        "[server]\nurl = \"https://remote\"\nbasic_auth_user = \"u\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("basic_auth_password_file"), "{err}");
}

#[test]
fn rules_labels_and_sizes_are_checked() {
    let err = from("[[service]]\nname = \"x\"\nexe = \"(\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("service[0].exe"), "{err}");
    let err = from("[[service]]\nexe = \"x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("service[0].name"), "{err}");
    let err = from("[[processes.exclude]]\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("processes.exclude[0]"), "{err}");
    let err = from("[labels]\n\"bad-name\" = \"v\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("labels.bad-name"), "{err}");
    let err = from("[labels]\nservice_name = \"v\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("[[service]] rules"), "{err}");
    let c = from("[output]\nmax_size = \"2GiB\"\n", &[]).unwrap();
    assert!(matches!(c.sink, Sink::Directory(ref d) if d.max_bytes == 2 << 30));
    assert!(from("[output]\nmax_size = \"12 parsecs\"\n", &[]).is_err());
    assert_eq!(parse_size("100MB"), Some(100_000_000));
    let err = match from("[nope]\n", &[]) {
        Err(ConfigError::Parse { source, .. }) => source.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(err.contains("unknown field `nope`"), "{err}");
}

#[test]
fn environment_names_map_to_keys() {
    let vars = [
        ("SMOLDER_SERVER_URL", "https://x"),
        ("SMOLDER_LOG", "debug"),
        ("SMOLDER_TYPO", "1"),
        ("HOME", "/root"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let (overrides, unknown) = env_overrides(vars);
    assert_eq!(unknown, ["SMOLDER_TYPO"]);
    let c = load(None, &[overrides]).unwrap();
    assert!(matches!(c.sink, Sink::Server { .. }));
}

#[test]
fn unwinding_defaults_to_dwarf_and_is_configurable() {
    let c = load(None, &[]).unwrap();
    assert_eq!(c.unwind, UnwindConfig::default());
    assert_eq!(c.unwind.mode, UnwindMode::Dwarf);
    let c = from(
        "[profiling]\nunwind = \"fp\"\nunwind_table_mib = 256\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.unwind.mode, UnwindMode::FramePointers);
    assert_eq!(c.unwind.table_bytes, 256 << 20);
    let mut env = Overrides::default();
    env.set("profiling.unwind", "dwarf", "SMOLDER_UNWIND");
    assert_eq!(
        from("[profiling]\nunwind = \"fp\"\n", &[env])
            .unwrap()
            .unwind
            .mode,
        UnwindMode::Dwarf
    );
    let err = from("[profiling]\nunwind = \"lbr\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("profiling.unwind") && err.contains("dwarf or fp"),
        "{err}"
    );
    let err = from("[profiling]\nunwind_table_mib = 0\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("profiling.unwind_table_mib"), "{err}");
}

#[test]
fn cuda_is_off_by_default_and_its_budget_is_checked() {
    assert!(load(None, &[]).unwrap().cuda.is_none());
    let mut env = Overrides::default();
    env.set("profiling.cuda", "true", "SMOLDER_CUDA");
    let c = load(None, &[env]).unwrap();
    let cuda = c.cuda.expect("on");
    assert_eq!(cuda.stacks_per_second, 100);
    assert!((cuda.max_overhead - 0.01).abs() < 1e-12);
    let c = from(
        "[profiling]\ncuda = true\ncuda_stacks_per_second = 20\ncuda_max_overhead_percent = 0.5\n",
        &[],
    )
    .unwrap();
    let cuda = c.cuda.expect("on");
    assert_eq!(cuda.stacks_per_second, 20);
    assert!((cuda.max_overhead - 0.005).abs() < 1e-12);
    for bad in ["0", "-1", "101"] {
        let err = from(
            &format!("[profiling]\ncuda = true\ncuda_max_overhead_percent = {bad}\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("profiling.cuda_max_overhead_percent"),
            "{err}"
        );
    }
}
