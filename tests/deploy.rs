//! The deployment files: the Dockerfile, docker-compose.yml (with
//! deploy/compose/) and the Helm chart deploy/helm/weir.
//!
//! - The chart: `helm lint --strict` and `helm template` pass, and the
//!   rendered manifests hold what scale-out needs (an ingest Deployment, a
//!   worker StatefulSet with a volume each, probes, scrape annotations,
//!   resources, the ConfigMaps and the Secret). helm comes from PATH or
//!   from target/helm (`bash .ci/run` installs it there); without it the
//!   chart tests skip loudly, and fail under CI.
//! - docker-compose.yml: read here for its wiring, and checked by
//!   `docker compose config` (or `docker-compose config`) where one is
//!   installed (a loud skip otherwise).
//! - The Dockerfile: read here for its structure, its HEALTHCHECK run
//!   against a live `weir serve`; `docker build` only where a Docker
//!   daemon answers.
//!
//! Every WEIR_* variable the files set must be one `weir serve --help`
//! names.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use weir_testkit::{Daemon, in_ci};

const CHART: &str = "deploy/helm/weir";

/// The repository's root (this package lives in runtime/).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn skip(test: &str, why: &str) {
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
}

/// One YAML document as JSON (weir's own YAML reader).
fn yaml(source: &str, what: &str) -> Value {
    weir_nodes::yaml::parse(source)
        .unwrap_or_else(|d| panic!("{what} is not valid YAML: {d:?}\n{source}"))
        .to_json()
}

/// The documents of a multi-document stream (`helm template`), empty and
/// comment-only ones left out.
fn yaml_docs(stream: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |doc: &mut String| {
        let has_content = doc
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if has_content {
            docs.push(yaml(doc, "a rendered manifest"));
        }
        doc.clear();
    };
    for line in stream.lines() {
        if line == "---" || line.starts_with("--- ") {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v:#}"))
}

/// The names `weir serve --help` mentions (flags' `[env: …]` and the
/// variables its texts name).
fn serve_env_names() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "weir serve --help: {}", text(&out));
    env_names(&String::from_utf8_lossy(&out.stdout))
}

/// Every `WEIR_[A-Z0-9_]+` in `text`.
fn env_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("WEIR_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + 5;
        while end < bytes.len()
            && (bytes[end].is_ascii_uppercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if boundary && end > start + 5 {
            names.insert(text[start..end].trim_end_matches('_').to_owned());
        }
        i = end;
    }
    names
}

fn assert_known_env(file: &str, names: &BTreeSet<String>) {
    let known = serve_env_names();
    let unknown: Vec<_> = names.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "{file} sets {unknown:?}, which `weir serve --help` does not name (it names {known:?})"
    );
}

// ---------------------------------------------------------------------------
// The Helm chart

/// helm, from target/helm (where `bash .ci/run` puts it) or PATH; None (a
/// loud skip) where neither works, a failure under CI.
fn helm(test: &str) -> Option<PathBuf> {
    let local = root().join("target/helm/helm");
    for candidate in [local, PathBuf::from("helm")] {
        let works = Command::new(&candidate)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            return Some(candidate);
        }
    }
    let why = "helm is not installed (bash .ci/run installs it in target/helm)";
    assert!(!in_ci(), "{test}: {why}");
    skip(test, why);
    None
}

struct Helm {
    bin: PathBuf,
    /// helm's cache, config and data folders, out of the user's home.
    home: tempfile::TempDir,
}

impl Helm {
    fn new(test: &str) -> Option<Self> {
        Some(Self {
            bin: helm(test)?,
            home: tempfile::tempdir().unwrap(),
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .current_dir(root())
            .env("HELM_CACHE_HOME", self.home.path().join("cache"))
            .env("HELM_CONFIG_HOME", self.home.path().join("config"))
            .env("HELM_DATA_HOME", self.home.path().join("data"))
            .output()
            .unwrap()
    }

    /// `helm template weir CHART ARGS…`, as JSON documents.
    fn template(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["template", "weir", CHART, "--namespace", "weir"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(out.status.success(), "helm {args:?}: {}", text(&out));
        yaml_docs(&String::from_utf8(out.stdout).unwrap())
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, pred: impl Fn(&Value) -> bool) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"] == kind && pred(d))
        .collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, pred: impl Fn(&Value) -> bool, what: &str) -> &'a Value {
    let found = find(docs, kind, pred);
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} ({what}), found {}: {docs:#?}",
        found.len()
    );
    found[0]
}

fn component(d: &Value) -> &str {
    d.pointer("/metadata/labels/app.kubernetes.io~1component")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The one container of a workload's pod template.
fn container(workload: &Value) -> &Value {
    let containers = workload
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .unwrap();
    assert_eq!(containers.len(), 1, "one container: {workload:#}");
    &containers[0]
}

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (str_at(e, "/name").to_owned(), e.clone()))
        .collect()
}

fn env_value(env: &BTreeMap<String, Value>, name: &str) -> String {
    let e = env
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {env:#?}"));
    str_at(e, "/value").to_owned()
}

/// The role a container is started with: `--role R` or WEIR_ROLE.
fn role(container: &Value) -> String {
    let args: Vec<&str> = container["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(i) = args.iter().position(|a| *a == "--role") {
        return args[i + 1].to_owned();
    }
    if let Some(r) = args.iter().find_map(|a| a.strip_prefix("--role=")) {
        return r.to_owned();
    }
    env_value(&env_of(container), "WEIR_ROLE")
}

/// What a pod of `workload` needs to run weir as the chart promises.
fn check_pod(workload: &Value, secret_name: &str) {
    let name = str_at(workload, "/metadata/name");
    let pod = &workload["spec"]["template"];
    let c = container(workload);

    // The probes, on the container's port.
    let port_name = str_at(c, "/ports/0/name");
    let port = c
        .pointer("/ports/0/containerPort")
        .and_then(Value::as_i64)
        .unwrap();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            str_at(c, &format!("/{probe}/httpGet/path")),
            path,
            "{name} {probe}"
        );
        let probe_port = &c[probe]["httpGet"]["port"];
        assert!(
            probe_port == port_name || probe_port.as_i64() == Some(port),
            "{name} {probe} port {probe_port} is not the container's ({port_name}, {port})"
        );
    }

    // Listens where the probes and the Service reach it, so it needs the
    // workspace secret (weir refuses a non-loopback address without one).
    let env = env_of(c);
    let listen = env_value(&env, "WEIR_LISTEN");
    assert_eq!(listen, format!("0.0.0.0:{port}"), "{name}");
    for var in ["WEIR_WORKSPACE_SECRET", "WEIR_SECRET_KEYS", "WEIR_AMQP_URL"] {
        let e = &env[var];
        assert_eq!(
            str_at(e, "/valueFrom/secretKeyRef/name"),
            secret_name,
            "{name} {var}"
        );
        assert_eq!(
            str_at(e, "/valueFrom/secretKeyRef/key"),
            var,
            "{name} {var}"
        );
    }

    // Prometheus scrapes /metrics on that port, without a token.
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true", "{name}: {ann}");
    assert_eq!(ann["prometheus.io/port"], port.to_string(), "{name}");
    assert_eq!(ann["prometheus.io/path"], "/metrics", "{name}");
    assert_eq!(env_value(&env, "WEIR_METRICS_OPEN"), "1", "{name}");

    // Resources, requested and bounded.
    for key in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(
                c["resources"][key][what].is_string(),
                "{name}: resources.{key}.{what} in {}",
                c["resources"]
            );
        }
    }

    // Non-root, read-only root file system, writable data folder.
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
    assert_ne!(spec["securityContext"]["runAsUser"], 0, "{name}");
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"], true,
        "{name}"
    );
    let data = env_value(&env, "WEIR_DATA");
    let mounts = c["volumeMounts"].as_array().unwrap();
    let data_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == data.as_str())
        .unwrap_or_else(|| panic!("{name}: nothing mounted at WEIR_DATA ({data})"));
    assert_ne!(
        data_mount["readOnly"], true,
        "{name}: the data folder is writable"
    );

    // The config folders come from the chart's ConfigMaps.
    for (var, what) in [
        ("WEIR_FLOWS", "flows"),
        ("WEIR_INTEGRATIONS", "integrations"),
        ("WEIR_ACTIONS", "actions"),
    ] {
        let path = env_value(&env, var);
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == path.as_str())
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {var} ({path})"));
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(
            str_at(volume, "/configMap/name"),
            format!("weir-{what}"),
            "{name}: {var}"
        );
    }
}

#[test]
fn helm_chart_lints_and_renders_ingest_and_workers() {
    let Some(helm) = Helm::new("helm_chart_lints_and_renders_ingest_and_workers") else {
        return;
    };
    let lint = helm.run(&["lint", "--strict", CHART]);
    assert!(lint.status.success(), "helm lint --strict: {}", text(&lint));
    assert!(text(&lint).contains("0 chart(s) failed"), "{}", text(&lint));

    let docs = helm.template(&[]);

    // The Secret: generated values of the right shape.
    let secret = one(&docs, "Secret", |_| true, "the chart's Secret");
    let secret_name = str_at(secret, "/metadata/name");
    let decoded = |key: &str| -> String {
        let b64 = str_at(secret, &format!("/data/{key}"));
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    assert!(
        decoded("WEIR_WORKSPACE_SECRET").len() >= 32,
        "a workspace secret of 32 bytes or more"
    );
    let ring = decoded("WEIR_SECRET_KEYS");
    for pair in ring.split(',') {
        let (kid, key) = pair
            .split_once(':')
            .unwrap_or_else(|| panic!("kid:key, not {pair}"));
        assert!(!kid.is_empty());
        let key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        assert_eq!(key.len(), 32, "32-byte keys in WEIR_SECRET_KEYS");
    }
    assert!(decoded("WEIR_AMQP_URL").starts_with("amqp://"));
    let ann = &secret["metadata"]["annotations"];
    assert_eq!(
        ann["helm.sh/resource-policy"], "keep",
        "the key ring outlives the release"
    );

    // Ingest: a Deployment.
    let ingest = one(&docs, "Deployment", |d| component(d) == "ingest", "ingest");
    assert_eq!(role(container(ingest)), "ingest");
    check_pod(ingest, secret_name);

    // Workers: a StatefulSet with a volume each, behind a headless Service.
    let worker = one(
        &docs,
        "StatefulSet",
        |d| component(d) == "worker",
        "workers",
    );
    assert_eq!(role(container(worker)), "worker");
    check_pod(worker, secret_name);
    assert_eq!(worker["spec"]["replicas"], 2);
    let claims = worker["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert_eq!(claims.len(), 1, "one volume per worker: {claims:#?}");
    assert_eq!(
        str_at(&claims[0], "/spec/resources/requests/storage"),
        "10Gi"
    );
    assert_eq!(str_at(&claims[0], "/spec/accessModes/0"), "ReadWriteOnce");
    let data_mount = container(worker)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/weir")
        .unwrap();
    assert_eq!(
        data_mount["name"], claims[0]["metadata"]["name"],
        "the data folder is the claim"
    );
    assert!(
        !worker["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == data_mount["name"]),
        "the workers' data is not a pod volume (shared or ephemeral)"
    );
    let headless = str_at(worker, "/spec/serviceName");
    let service = one(
        &docs,
        "Service",
        |d| d["metadata"]["name"] == headless,
        "the workers' Service",
    );
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "the workers' Service is headless"
    );
    assert_eq!(
        env_value(&env_of(container(worker)), "WEIR_PREFETCH"),
        "256"
    );

    // Both roles declare the queues alike.
    for var in ["WEIR_PARTITIONS", "WEIR_MAX_QUEUE"] {
        assert_eq!(
            env_value(&env_of(container(ingest)), var),
            env_value(&env_of(container(worker)), var),
            "{var} must be the same on every process"
        );
    }
    assert_eq!(
        env_value(&env_of(container(ingest)), "WEIR_PARTITIONS"),
        "16"
    );

    // The ingest Service reaches the ingest pods only.
    let svc = one(
        &docs,
        "Service",
        |d| component(d) == "ingest",
        "the ingest Service",
    );
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &ingest["spec"]["template"]["metadata"]["labels"][k], v,
            "the ingest Service selects the ingest pods"
        );
    }
    assert_ne!(
        svc["spec"]["selector"]["app.kubernetes.io/component"],
        worker["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
    );

    // The ConfigMaps: the example flow of values.yaml, valid for weir.
    let flows = one(
        &docs,
        "ConfigMap",
        |d| d["metadata"]["name"] == "weir-flows",
        "flows",
    );
    let files = flows["data"]
        .as_object()
        .expect("the flows ConfigMap has files");
    assert!(files.contains_key("hello.yaml"), "{files:?}");
    for what in ["weir-integrations", "weir-actions"] {
        one(&docs, "ConfigMap", |d| d["metadata"]["name"] == what, what);
    }
    let dir = tempfile::tempdir().unwrap();
    for (file, content) in files {
        std::fs::write(dir.path().join(file), content.as_str().unwrap()).unwrap();
    }
    let validate = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "weir validate (the chart's flows): {}",
        text(&validate)
    );

    // Every variable set is one weir reads.
    let mut names = BTreeSet::new();
    for w in [ingest, worker] {
        names.extend(env_of(container(w)).into_keys());
    }
    assert_known_env(CHART, &names);
}

#[test]
fn helm_chart_uses_an_existing_secret_and_refuses_bad_values() {
    let Some(helm) = Helm::new("helm_chart_uses_an_existing_secret_and_refuses_bad_values") else {
        return;
    };
    let lint = helm.run(&[
        "lint",
        "--strict",
        CHART,
        "--set",
        "existingSecret=weir-own",
    ]);
    assert!(lint.status.success(), "helm lint: {}", text(&lint));

    // existingSecret: the chart makes no Secret and reads that one.
    let docs = helm.template(&[
        "--set",
        "existingSecret=weir-own",
        "--set",
        "worker.replicas=5",
    ]);
    assert!(
        find(&docs, "Secret", |_| true).is_empty(),
        "no Secret of the chart's own"
    );
    let worker = one(&docs, "StatefulSet", |_| true, "workers");
    assert_eq!(worker["spec"]["replicas"], 5);
    for w in [worker, one(&docs, "Deployment", |_| true, "ingest")] {
        let env = env_of(container(w));
        for var in ["WEIR_WORKSPACE_SECRET", "WEIR_SECRET_KEYS", "WEIR_AMQP_URL"] {
            assert_eq!(
                str_at(&env[var], "/valueFrom/secretKeyRef/name"),
                "weir-own"
            );
        }
    }

    // Given values are used as they are.
    let secret = "s".repeat(40);
    let ring = format!(
        "k2:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    let docs = helm.template(&[
        "--set",
        &format!("workspaceSecret={secret}"),
        "--set",
        &format!("secretKeys={ring}"),
    ]);
    let s = one(&docs, "Secret", |_| true, "the Secret");
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    assert_eq!(s["data"]["WEIR_WORKSPACE_SECRET"], b64(&secret));
    assert_eq!(s["data"]["WEIR_SECRET_KEYS"], b64(&ring));

    // Refused: a short workspace secret, a file weir would not read, what
    // weir would refuse to start with, a misspelt setting.
    for (set, says) in [
        ("workspaceSecret=too-short", "at least 32"),
        ("flows.notes\\.txt=x", "not a file name weir reads"),
        ("partitions=0", "partitions"),
        ("amqp.url=http://rabbitmq", "amqp"),
        ("worker.replica=3", "replica"),
    ] {
        let out = helm.run(&["template", "weir", CHART, "--set", set]);
        assert!(!out.status.success(), "helm template --set {set} passed");
        assert!(text(&out).contains(says), "--set {set}: {}", text(&out));
    }
}

// ---------------------------------------------------------------------------
// docker-compose.yml

fn compose_file() -> Value {
    yaml(&read("docker-compose.yml"), "docker-compose.yml")
}

fn compose_env(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_object()
        .unwrap_or_else(|| panic!("environment as a map: {service:#}"))
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// The named volume mounted at `path`, if any.
fn named_volume(service: &Value, path: &str) -> Option<String> {
    service["volumes"].as_array()?.iter().find_map(|v| {
        let (source, rest) = v.as_str()?.split_once(':')?;
        let target = rest.split(':').next()?;
        (target == path && !source.starts_with('.') && !source.starts_with('/'))
            .then(|| source.to_owned())
    })
}

#[test]
fn compose_file_wires_ingest_workers_and_the_broker() {
    let compose = compose_file();
    let services = compose["services"].as_object().unwrap();
    let declared: BTreeSet<&String> = compose["volumes"].as_object().unwrap().keys().collect();

    // The broker: quorum-ready configuration, a health check.
    let rabbit = &services["rabbitmq"];
    let health: Vec<&str> = rabbit["healthcheck"]["test"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        health.contains(&"rabbitmq-diagnostics") && health.contains(&"ping"),
        "{health:?}"
    );
    let conf_mount = rabbit["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|v| v.contains("/etc/rabbitmq/"))
        .expect("a RabbitMQ configuration is mounted");
    let conf_path = conf_mount
        .split(':')
        .next()
        .unwrap()
        .trim_start_matches("./");
    let conf = read(conf_path);
    let settings: BTreeMap<&str, &str> = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    assert_eq!(
        settings.get("default_queue_type"),
        Some(&"quorum"),
        "{conf}"
    );
    assert!(settings.contains_key("consumer_timeout"), "{conf}");
    assert!(
        settings.keys().any(|k| k.starts_with("disk_free_limit")),
        "{conf}"
    );

    // weir: one ingest and two workers, started once the broker is healthy.
    let weir: Vec<(&String, &Value)> = services.iter().filter(|(n, _)| *n != "rabbitmq").collect();
    let mut roles = BTreeMap::new();
    let mut data_volumes = BTreeSet::new();
    let mut partitions = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (name, s) in &weir {
        assert_eq!(
            s["depends_on"]["rabbitmq"]["condition"], "service_healthy",
            "{name} waits for a healthy broker"
        );
        let env = compose_env(s);
        names.extend(env.keys().cloned());
        roles.insert(name.as_str(), env["WEIR_ROLE"].clone());
        assert!(env["WEIR_AMQP_URL"].starts_with("amqp://"), "{name}");
        partitions.insert(env["WEIR_PARTITIONS"].clone());
        // Secrets come from the environment (or .env), required.
        for var in ["WEIR_WORKSPACE_SECRET", "WEIR_SECRET_KEYS"] {
            assert!(
                env[var].starts_with(&format!("${{{var}:?")),
                "{name}: {var} must be `${{{var}:?…}}`, not {:?}",
                env[var]
            );
        }
        assert!(
            env["WEIR_AMQP_URL"].contains("${RABBITMQ_PASSWORD:?"),
            "{name}"
        );
        let data = named_volume(s, "/var/lib/weir")
            .unwrap_or_else(|| panic!("{name}: a named volume at /var/lib/weir"));
        assert!(
            declared.contains(&data),
            "{name}: volume {data} is declared"
        );
        assert!(
            data_volumes.insert(data.clone()),
            "{name} shares the volume {data}"
        );
    }
    assert_eq!(
        partitions.len(),
        1,
        "one WEIR_PARTITIONS for all: {partitions:?}"
    );
    assert_eq!(
        roles,
        BTreeMap::from([
            ("ingest", "ingest".to_owned()),
            ("worker-1", "worker".to_owned()),
            ("worker-2", "worker".to_owned()),
        ])
    );
    let ports: Vec<&str> = services["ingest"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        ports.iter().any(|p| p.ends_with(":8080")),
        "ingest publishes 8080: {ports:?}"
    );
    for w in ["worker-1", "worker-2"] {
        assert!(services[w]["ports"].is_null(), "{w} publishes no port");
    }
    assert_known_env("docker-compose.yml", &names);

    // The example .env has the variables, and no value.
    let example = read("deploy/compose/.env.example");
    for var in [
        "WEIR_WORKSPACE_SECRET",
        "WEIR_SECRET_KEYS",
        "RABBITMQ_PASSWORD",
    ] {
        let line = example
            .lines()
            .find(|l| l.starts_with(&format!("{var}=")))
            .unwrap_or_else(|| panic!(".env.example lacks {var}"));
        assert_eq!(
            line,
            format!("{var}="),
            ".env.example must not hold a value"
        );
    }
}

/// `docker compose` or `docker-compose`, whichever works.
fn compose_command() -> Option<Vec<String>> {
    let works = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&["docker", "compose"]) {
        return Some(vec!["docker".into(), "compose".into()]);
    }
    if works(&["docker-compose"]) {
        return Some(vec!["docker-compose".into()]);
    }
    None
}

#[test]
fn compose_config_validates_and_requires_the_secrets() {
    let Some(cmd) = compose_command() else {
        skip(
            "compose_config_validates_and_requires_the_secrets",
            "neither `docker compose` nor `docker-compose` is installed",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let empty_env = dir.path().join("empty.env");
    std::fs::write(&empty_env, "").unwrap();
    let config = |vars: &[(&str, &str)]| {
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..])
            .arg("--env-file")
            .arg(&empty_env)
            .args(["-f", "docker-compose.yml", "config"])
            .current_dir(root());
        for var in [
            "WEIR_WORKSPACE_SECRET",
            "WEIR_SECRET_KEYS",
            "RABBITMQ_PASSWORD",
            "WEIR_PARTITIONS",
            "WEIR_PUBLIC_URL",
        ] {
            c.env_remove(var);
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let ring = format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode([1u8; 32])
    );
    let all = [
        (
            "WEIR_WORKSPACE_SECRET",
            "compose-test-secret-0123456789abcdef0123",
        ),
        ("WEIR_SECRET_KEYS", ring.as_str()),
        ("RABBITMQ_PASSWORD", "composetest"),
    ];
    let out = config(&all);
    assert!(out.status.success(), "{cmd:?} config: {}", text(&out));
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(
        rendered.contains("amqp://weir:composetest@rabbitmq:5672/%2f"),
        "{rendered}"
    );

    for missing in [
        "WEIR_WORKSPACE_SECRET",
        "WEIR_SECRET_KEYS",
        "RABBITMQ_PASSWORD",
    ] {
        let vars: Vec<_> = all.iter().filter(|(k, _)| *k != missing).copied().collect();
        let out = config(&vars);
        assert!(
            !out.status.success(),
            "{cmd:?} config passed without {missing}"
        );
        assert!(
            text(&out).contains(missing),
            "without {missing}: {}",
            text(&out)
        );
    }
}

// ---------------------------------------------------------------------------
// The Dockerfile

/// An instruction: its keyword (upper case) and the rest of its line(s).
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let source = read("Dockerfile");
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in source.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if !pending.is_empty() && trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (keyword, args) = pending.split_once(char::is_whitespace).unwrap();
                out.push(Instruction {
                    keyword: keyword.to_uppercase(),
                    args: args.trim().to_owned(),
                });
                pending.clear();
            }
        }
    }
    assert!(
        pending.is_empty(),
        "the Dockerfile ends inside an instruction"
    );
    out
}

/// The JSON array of an exec-form instruction.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("exec form (a JSON array): {args}: {e}"))
}

/// `KEY=VALUE …` of ENV instructions.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    args.split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV KEY=VALUE, not {kv}"));
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

/// The HEALTHCHECK's command line.
fn healthcheck(instructions: &[Instruction]) -> Vec<String> {
    let hc = instructions
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("a HEALTHCHECK");
    let cmd = hc.args.split_once("CMD ").expect("HEALTHCHECK … CMD").1;
    exec_form(cmd)
}

#[test]
fn dockerfile_builds_weir_in_stages_and_runs_it_as_a_user() {
    let all = dockerfile();
    let froms: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");

    // The build stage, named, builds the binary from the lock file.
    let first: Vec<&str> = all[froms[0]].args.split_whitespace().collect();
    assert!(
        first[0].starts_with("rust:") && first[0].contains("bookworm"),
        "{first:?}"
    );
    assert_eq!(
        first.get(1).map(|s| s.to_lowercase()),
        Some("as".into()),
        "{first:?}"
    );
    let builder = first[2];
    let build_stage = &all[froms[0]..froms[froms.len() - 1]];
    assert!(
        build_stage.iter().any(|i| i.keyword == "RUN"
            && i.args
                .contains("cargo build --release --locked -p weir-runtime --bin weir")),
        "the build stage runs cargo build --release --locked -p weir-runtime --bin weir"
    );

    // The final stage: the binary only, and the examples.
    let last = &all[froms[froms.len() - 1]..];
    assert!(
        last[0].args.starts_with("debian:bookworm-slim"),
        "{}",
        last[0].args
    );
    let of = |keyword: &str| -> Vec<&Instruction> {
        last.iter().filter(|i| i.keyword == keyword).collect()
    };
    assert!(
        of("COPY")
            .iter()
            .any(|i| i.args.starts_with(&format!("--from={builder} ")) && i.args.contains("weir")),
        "the final stage copies weir from {builder}"
    );
    assert!(
        of("RUN").iter().any(|i| i.args.contains("ca-certificates")),
        "ca-certificates for outgoing TLS"
    );

    let env: BTreeMap<String, String> = of("ENV").iter().flat_map(|i| env_pairs(&i.args)).collect();
    for (var, folder) in [
        ("WEIR_FLOWS", "flows"),
        ("WEIR_INTEGRATIONS", "integrations"),
        ("WEIR_ACTIONS", "actions"),
    ] {
        let target = env.get(var).unwrap_or_else(|| panic!("ENV {var}"));
        assert!(
            of("COPY").iter().any(|i| {
                let parts: Vec<&str> = i.args.split_whitespace().collect();
                parts.len() == 2
                    && parts[0].trim_end_matches('/') == folder
                    && parts[1].trim_end_matches('/') == target
            }),
            "COPY {folder}/ {target}/"
        );
        assert!(
            root().join(folder).is_dir(),
            "{folder}/ is in the repository"
        );
    }

    // A non-root user that owns the data volume.
    let users = of("USER");
    let user = users
        .last()
        .expect("a USER")
        .args
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(user != "root" && user != "0", "USER {user}");
    let uid = of("RUN")
        .iter()
        .find_map(|i| {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "useradd")?;
            let uid = words[at..].windows(2).find(|w| w[0] == "--uid")?[1];
            words[at..]
                .contains(&user.as_str())
                .then(|| uid.parse::<u32>().unwrap())
        })
        .unwrap_or_else(|| panic!("useradd --uid N … {user}"));
    assert!(uid >= 1000, "a fixed, unprivileged uid: {uid}");
    let data = env.get("WEIR_DATA").expect("ENV WEIR_DATA");
    let volumes = of("VOLUME");
    assert!(
        volumes.iter().any(|v| v.args.contains(data.as_str())),
        "VOLUME {data}"
    );
    assert!(
        of("RUN")
            .iter()
            .any(|i| i.args.contains(&format!("-o {user}")) && i.args.contains(data.as_str())),
        "{data} is created owned by {user}"
    );

    // Listens where EXPOSE says; weir then requires a workspace secret,
    // which the image must not carry.
    let listen = env.get("WEIR_LISTEN").expect("ENV WEIR_LISTEN");
    let port = listen.rsplit(':').next().unwrap();
    assert!(listen.starts_with("0.0.0.0:"), "{listen}");
    assert!(
        of("EXPOSE")
            .iter()
            .any(|i| i.args.split_whitespace().any(|p| p == port)),
        "EXPOSE {port}"
    );
    for secret in ["WEIR_WORKSPACE_SECRET", "WEIR_SECRET_KEYS"] {
        assert!(
            !env.contains_key(secret),
            "the image must not hold {secret}"
        );
    }

    let entry = of("ENTRYPOINT");
    assert_eq!(exec_form(&entry.last().expect("ENTRYPOINT").args), ["weir"]);
    let cmd = of("CMD");
    assert_eq!(exec_form(&cmd.last().expect("CMD").args), ["serve"]);
    let hc = healthcheck(last);
    assert!(hc.join(" ").contains("/healthz"), "{hc:?}");

    assert_known_env("Dockerfile", &env.keys().cloned().collect());

    // The build context leaves out build output, local state and secrets.
    let ignore = read(".dockerignore");
    let patterns: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/'))
        .collect();
    for p in ["target", ".git", ".env", "**/node_modules"] {
        assert!(
            patterns.contains(p),
            ".dockerignore lacks {p}: {patterns:?}"
        );
    }
}

/// Runs the image's HEALTHCHECK here, as the image would, against a
/// server listening on `port`.
fn run_healthcheck(port: u16) -> Output {
    let cmd = healthcheck(&dockerfile());
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("WEIR_LISTEN", format!("0.0.0.0:{port}"))
        .output()
        .unwrap()
}

/// A server that answers every connection with `status` (one at a time).
fn answer_with(status: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    port
}

#[test]
fn dockerfile_healthcheck_passes_on_a_live_weir_only() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let port: u16 = daemon.base.rsplit(':').next().unwrap().parse().unwrap();
    let out = run_healthcheck(port);
    assert!(
        out.status.success(),
        "the HEALTHCHECK against weir: {}",
        text(&out)
    );

    let unhealthy = answer_with("503 Service Unavailable");
    assert!(
        !run_healthcheck(unhealthy).status.success(),
        "a 503 passed the HEALTHCHECK"
    );
    let not_found = answer_with("404 Not Found");
    assert!(
        !run_healthcheck(not_found).status.success(),
        "a 404 passed the HEALTHCHECK"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(
        !run_healthcheck(closed_port).status.success(),
        "no server passed the HEALTHCHECK"
    );
}

#[test]
fn docker_build_where_a_daemon_answers() {
    let daemon_up = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !daemon_up {
        skip(
            "docker_build_where_a_daemon_answers",
            "no Docker daemon answers `docker info`",
        );
        return;
    }
    let tag = "weir:deploy-test";
    let build = Command::new("docker")
        .args(["build", "-t", tag, "."])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(build.status.success(), "docker build: {}", text(&build));
    let inspect = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Config.User}}", tag])
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", text(&inspect));
    let user = String::from_utf8_lossy(&inspect.stdout).trim().to_owned();
    assert!(
        !user.is_empty() && !user.starts_with("root") && !user.starts_with('0'),
        "User {user}"
    );
    let version = Command::new("docker")
        .args(["run", "--rm", tag, "--version"])
        .output()
        .unwrap();
    assert!(
        version.status.success(),
        "weir --version in the image: {}",
        text(&version)
    );
}
