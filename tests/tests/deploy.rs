//! The deployment in `deploy/` is valid as written: the Kubernetes manifests pass
//! `kubernetes-validate --strict` (unknown fields are errors) for the oldest and newest Kubernetes
//! versions we support, the kustomization lists every manifest and generates every Secret they
//! mount, the compose file passes `docker compose config -q` (or Debian's `docker-compose`), and
//! every flag, `MOQCAST_*` variable and TOML key that `deploy/` gives the relay or the sidecar is
//! one that the built binary's `--help` lists.
//!
//! The validators come from `scripts/setup.sh`: kubernetes-validate (PyPI, pinned) in the venv
//! `~/.cache/moqcast/venv-deploy` (or `$MOQCAST_DEPLOY_VENV`, or `$MOQCAST_KUBERNETES_VALIDATE`
//! naming the program), whose Python (with PyYAML, and tomllib) also reads the YAML and TOML here.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

/// Kubernetes versions the manifests must validate against: the oldest release that managed
/// clusters still commonly run, and the newest that kubernetes-validate 1.37.0 has schemas for.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Manifests in deploy/k8s/ that `kubectl apply -k` does not apply: the kustomization itself and
/// the documented Secret placeholders (the kustomization generates the real ones from files).
const NOT_RESOURCES: [&str; 2] = ["kustomization.yaml", "secrets.example.yaml"];

/// `MOQCAST_*` variables deploy/ sets that are not flags: the sidecar's model directory
/// (ai-sidecar/src/locate.rs, read like `HOME`).
const NON_FLAG_VARIABLES: [&str; 1] = ["MOQCAST_MODEL_DIR"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// kubernetes-validate: `$MOQCAST_KUBERNETES_VALIDATE`, the deploy venv's, or one on PATH.
fn kubernetes_validate() -> PathBuf {
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("MOQCAST_KUBERNETES_VALIDATE") {
        candidates.push(PathBuf::from(p));
    }
    let venv = std::env::var_os("MOQCAST_DEPLOY_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/moqcast/venv-deploy"))
        });
    if let Some(venv) = venv {
        candidates.push(venv.join("bin/kubernetes-validate"));
    }
    candidates.push(PathBuf::from("kubernetes-validate"));
    for c in candidates {
        match Command::new(&c).arg("--version").output() {
            Ok(out) if out.status.success() => return c,
            _ => tried.push(c.display().to_string()),
        }
    }
    panic!(
        "kubernetes-validate not found (tried {}): run `bash scripts/setup.sh`, which installs it \
         into ~/.cache/moqcast/venv-deploy",
        tried.join(", ")
    );
}

/// The Python beside kubernetes-validate (its venv has PyYAML), else `python3`.
fn python(validator: &Path) -> PathBuf {
    let beside = validator.with_file_name("python");
    if validator.components().count() > 1 && beside.exists() {
        beside
    } else {
        PathBuf::from("python3")
    }
}

/// Reads every YAML file of deploy/ (each file: its list of documents) and every TOML file or
/// TOML value of a ConfigMap (its top-level keys), as JSON.
const READ_DEPLOY: &str = r#"
import json, pathlib, sys, tomllib, yaml
root = pathlib.Path(sys.argv[1])
out = {"yaml": {}, "toml": {}}
for p in sorted(root.rglob("*.yaml")):
    if "secrets" in p.relative_to(root).parts[:-1]:
        continue
    docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
    name = str(p.relative_to(root))
    out["yaml"][name] = docs
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == "ConfigMap":
            for key, text in (d.get("data") or {}).items():
                if key.endswith(".toml"):
                    out["toml"][f"{name}:{key}"] = sorted(tomllib.loads(text))
for p in sorted(root.glob("*.toml")):
    out["toml"][p.name] = sorted(tomllib.loads(p.read_text()))
json.dump(out, sys.stdout)
"#;

struct Deploy {
    /// File (relative to deploy/) -> its YAML documents.
    yaml: BTreeMap<String, Vec<Value>>,
    /// File (or `file:configmap-key`) -> the TOML's top-level keys.
    toml: BTreeMap<String, Vec<String>>,
}

fn read_deploy(validator: &Path) -> Deploy {
    let out = run(Command::new(python(validator))
        .arg("-c")
        .arg(READ_DEPLOY)
        .arg(deploy()));
    assert!(
        out.status.success(),
        "reading deploy/ failed (YAML or TOML that does not parse?):\n{}",
        text(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON from the reader");
    let yaml = v["yaml"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, docs)| (k.clone(), docs.as_array().unwrap().clone()))
        .collect();
    let toml = v["toml"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, keys)| {
            let keys = keys
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string())
                .collect();
            (k.clone(), keys)
        })
        .collect();
    Deploy { yaml, toml }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn k8s_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy().join("k8s"))
        .expect("deploy/k8s")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "deploy/k8s has too few manifests: {files:?}"
    );
    files
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn kubernetes_manifests_pass_strict_validation() {
    let validator = kubernetes_validate();
    let files: Vec<PathBuf> = k8s_files()
        .into_iter()
        .filter(|p| file_name(p) != "kustomization.yaml")
        .collect();
    let deploy = read_deploy(&validator);
    let documents: usize = files
        .iter()
        .map(|f| deploy.yaml[&format!("k8s/{}", file_name(f))].len())
        .sum();
    for version in KUBERNETES_VERSIONS {
        let out = run(Command::new(&validator)
            .args(["--strict", "--kubernetes-version", version])
            .args(&files));
        let report = text(&out);
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {version} failed:\n{report}"
        );
        // A resource without a schema (a misspelt kind or apiVersion) is only a warning to
        // kubernetes-validate: here it is an error.
        let warnings: Vec<&str> = report
            .lines()
            .filter(|l| l.starts_with("WARN") || l.starts_with("ERROR"))
            .collect();
        assert!(
            warnings.is_empty(),
            "kubernetes-validate -k {version} warned:\n{}",
            warnings.join("\n")
        );
        let passed = report.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(
            passed, documents,
            "kubernetes-validate -k {version} passed {passed} of {documents} documents:\n{report}"
        );
    }
}

/// Every `name` under `key` anywhere in `v` (e.g. every `secretName`).
fn collect_names(v: &Value, key: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == key {
                    if let Some(s) = child.as_str() {
                        out.insert(s.to_string());
                    }
                }
                collect_names(child, key, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_names(i, key, out)),
        _ => {}
    }
}

#[test]
fn kustomization_applies_every_manifest_and_makes_every_secret() {
    let deploy = read_deploy(&kubernetes_validate());
    let kustomization = &deploy.yaml["k8s/kustomization.yaml"][0];
    let resources: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let files: BTreeSet<String> = k8s_files()
        .iter()
        .map(|p| file_name(p))
        .filter(|n| !NOT_RESOURCES.contains(&n.as_str()))
        .collect();
    assert_eq!(
        resources, files,
        "kustomization.yaml's resources differ from the manifests in deploy/k8s/"
    );

    let generated: BTreeSet<String> = kustomization["secretGenerator"]
        .as_array()
        .expect("secretGenerator")
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect();
    let mut mounted = BTreeSet::new();
    for file in &files {
        for doc in &deploy.yaml[&format!("k8s/{file}")] {
            collect_names(doc, "secretName", &mut mounted);
            if let Some(refs) = doc.pointer("/spec/template/spec/containers") {
                for c in refs.as_array().unwrap() {
                    for env in c["env"].as_array().into_iter().flatten() {
                        if let Some(name) = env.pointer("/valueFrom/secretKeyRef/name") {
                            mounted.insert(name.as_str().unwrap().to_string());
                        }
                    }
                }
            }
        }
    }
    assert_eq!(
        mounted, generated,
        "the Secrets the manifests use differ from those kustomization.yaml generates"
    );
    let documented: BTreeSet<String> = deploy.yaml["k8s/secrets.example.yaml"]
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        documented, generated,
        "secrets.example.yaml documents other Secrets than kustomization.yaml generates"
    );

    // Every ConfigMap a pod mounts is in the manifests.
    let mut config_maps = BTreeSet::new();
    let mut defined = BTreeSet::new();
    for file in &files {
        for doc in &deploy.yaml[&format!("k8s/{file}")] {
            if let Some(volumes) = doc.pointer("/spec/template/spec/volumes") {
                for v in volumes.as_array().unwrap() {
                    if let Some(name) = v.pointer("/configMap/name") {
                        config_maps.insert(name.as_str().unwrap().to_string());
                    }
                }
            }
            if doc["kind"] == "ConfigMap" {
                defined.insert(doc["metadata"]["name"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(
        config_maps.is_subset(&defined),
        "ConfigMaps mounted but not defined: {:?}",
        config_maps.difference(&defined).collect::<Vec<_>>()
    );
}

#[test]
fn compose_file_is_valid() {
    let deploy = read_deploy(&kubernetes_validate());
    let compose = &deploy.yaml["compose.yaml"][0];
    let services = compose["services"].as_object().expect("services");
    let relays: Vec<&String> = services
        .iter()
        .filter(|(_, s)| image_of(s).contains("moqcast-relay"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        relays.len() >= 3,
        "compose.yaml runs {relays:?}: three relays expected"
    );
    assert!(services.contains_key("redis"), "compose.yaml has no redis");
    assert!(
        services
            .values()
            .any(|s| image_of(s).contains("moqcast-sidecar")),
        "compose.yaml has no sidecar"
    );
    for (name, s) in services {
        if image_of(s).contains("moqcast-") {
            let health = s["healthcheck"]["test"].to_string();
            assert!(
                health.contains("/healthz"),
                "{name}: no /healthz healthcheck"
            );
        }
    }

    // The compose implementation's own check (schema, interpolation, anchors).
    let file = deploy_path("compose.yaml");
    let docker_compose_v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let out = if docker_compose_v2 {
        run(Command::new("docker")
            .args(["compose", "-f"])
            .arg(&file)
            .args(["config", "-q"]))
    } else {
        match Command::new("docker-compose")
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"])
            .output()
        {
            Ok(out) => out,
            Err(e) => panic!(
                "neither `docker compose` nor `docker-compose` runs here ({e}): run \
                 `bash scripts/setup.sh`, which installs Debian's docker-compose"
            ),
        }
    };
    assert!(
        out.status.success(),
        "compose config -q rejected deploy/compose.yaml:\n{}",
        text(&out)
    );
}

fn deploy_path(name: &str) -> PathBuf {
    deploy().join(name)
}

fn image_of(service: &Value) -> &str {
    service["image"].as_str().unwrap_or("")
}

/// Which program a container runs, from its image name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Program {
    Relay,
    Sidecar,
}

impl Program {
    fn of_image(image: &str) -> Option<Self> {
        if image.contains("moqcast-relay") {
            Some(Self::Relay)
        } else if image.contains("moqcast-sidecar") {
            Some(Self::Sidecar)
        } else {
            None
        }
    }

    fn of_toml(name: &str) -> Option<Self> {
        if name.ends_with("relay.toml") {
            Some(Self::Relay)
        } else if name.ends_with("sidecar.toml") {
            Some(Self::Sidecar)
        } else {
            None
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Self::Relay => "moqcast-relay",
            Self::Sidecar => "moqcast-sidecar",
        }
    }
}

/// What deploy/ gives each program: flag (`--name`) or variable -> where.
#[derive(Default)]
struct Used(BTreeMap<(Program, String), BTreeSet<String>>);

impl Used {
    fn add(&mut self, program: Program, what: String, place: &str) {
        self.0
            .entry((program, what))
            .or_default()
            .insert(place.to_string());
    }

    /// Flags among command-line words (`--name` or `--name=value`).
    fn words<'a>(&mut self, program: Program, words: impl Iterator<Item = &'a str>, place: &str) {
        for w in words {
            if let Some(flag) = w.strip_prefix("--") {
                let name = flag.split('=').next().unwrap();
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    self.add(program, format!("--{name}"), place);
                }
            }
        }
    }

    fn variable(&mut self, program: Program, name: &str, place: &str) {
        if name.starts_with("MOQCAST_") && !NON_FLAG_VARIABLES.contains(&name) {
            self.add(program, name.to_string(), place);
        }
    }
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::Array(items) => items.iter().filter_map(|i| i.as_str()).collect(),
        Value::String(s) => s.split_whitespace().collect(),
        _ => Vec::new(),
    }
}

/// Every flag, variable and TOML key deploy/ gives the relay and the sidecar.
fn used_in_deploy(deploy: &Deploy) -> Used {
    let mut used = Used::default();
    for (file, docs) in &deploy.yaml {
        for doc in docs {
            // Compose services.
            if let Some(services) = doc["services"].as_object() {
                for (name, s) in services {
                    let Some(program) = Program::of_image(image_of(s)) else {
                        continue;
                    };
                    let place = format!("deploy/{file} ({name})");
                    used.words(program, strings(&s["command"]).into_iter(), &place);
                    match &s["environment"] {
                        Value::Object(env) => {
                            env.keys().for_each(|k| used.variable(program, k, &place))
                        }
                        Value::Array(env) => env.iter().filter_map(|e| e.as_str()).for_each(|e| {
                            used.variable(program, e.split('=').next().unwrap(), &place)
                        }),
                        _ => {}
                    }
                }
            }
            // Kubernetes pod templates.
            let containers = doc
                .pointer("/spec/template/spec/containers")
                .and_then(|c| c.as_array());
            for c in containers.into_iter().flatten() {
                let Some(program) = Program::of_image(c["image"].as_str().unwrap_or("")) else {
                    continue;
                };
                let place = format!("deploy/{file} ({})", c["name"].as_str().unwrap_or("?"));
                used.words(program, strings(&c["command"]).into_iter(), &place);
                used.words(program, strings(&c["args"]).into_iter(), &place);
                for env in c["env"].as_array().into_iter().flatten() {
                    used.variable(program, env["name"].as_str().unwrap_or(""), &place);
                }
            }
        }
    }
    // TOML files and ConfigMap values: key `a_b` is flag `--a-b`.
    for (name, keys) in &deploy.toml {
        let Some(program) = Program::of_toml(name) else {
            continue;
        };
        let place = format!("deploy/{name}");
        for k in keys {
            used.add(program, format!("--{}", k.replace('_', "-")), &place);
        }
    }
    // The Containerfile's ENV lines, per stage; the systemd unit's ExecStart.
    let containerfile = std::fs::read_to_string(deploy_path("Containerfile")).unwrap();
    let mut stage = None;
    for line in containerfile.lines() {
        if line.starts_with("FROM ") {
            stage = if line.ends_with(" AS relay") {
                Some(Program::Relay)
            } else if line.ends_with(" AS sidecar") {
                Some(Program::Sidecar)
            } else {
                None
            };
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(program) = stage {
            for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                used.variable(program, word, "deploy/Containerfile");
            }
        }
    }
    let unit = std::fs::read_to_string(deploy_path("moqcast-relay.service")).unwrap();
    for line in unit.lines().filter(|l| l.starts_with("ExecStart=")) {
        used.words(
            Program::Relay,
            line.split_whitespace(),
            "deploy/moqcast-relay.service",
        );
    }
    used
}

/// The flags and variables a program's `--help` lists.
fn help(program: Program) -> BTreeSet<String> {
    let out = run(moqcast_tests::command(program.binary()).arg("--help"));
    assert!(out.status.success(), "{} --help failed", program.binary());
    let help = String::from_utf8_lossy(&out.stdout);
    let mut known = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || "[],<>=".contains(c)) {
        let word = word.trim_end_matches([']', ':']);
        if (word.starts_with("--") && word.len() > 2) || word.starts_with("MOQCAST_") {
            known.insert(word.to_string());
        }
    }
    known
}

#[test]
fn every_flag_in_deploy_exists() {
    let deploy = read_deploy(&kubernetes_validate());
    let used = used_in_deploy(&deploy);
    let relay_flags = used
        .0
        .keys()
        .filter(|(p, w)| *p == Program::Relay && w.starts_with("--"))
        .count();
    assert!(
        relay_flags >= 10,
        "found only {relay_flags} relay flags in deploy/: is the reader broken?"
    );
    let mut known = BTreeMap::new();
    let mut missing = Vec::new();
    for ((program, what), places) in &used.0 {
        let known = known.entry(*program).or_insert_with(|| help(*program));
        if !known.contains(what) {
            missing.push(format!(
                "  {} {what}: used in {}",
                program.binary(),
                places.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/ uses flags or variables that `--help` does not list ({} of {}):\n{}",
        missing.len(),
        used.0.len(),
        missing.join("\n")
    );
}
