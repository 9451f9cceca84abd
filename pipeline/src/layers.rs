//! The layers of ARCHITECTURE.md, checked: each module's `crate::` imports (outside its
//! tests) may name only its own layer or those below, with no exceptions; and only the
//! synthetic-data commands import `synth`.

/// Layers bottom up; a module is in the layer of its longest matching prefix.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &[
            "error",
            "bad_input",
            "clock",
            "durable",
            "faults",
            "damage",
            "progress",
        ],
    ),
    (
        "rules",
        &[
            "governance",
            "governance/optouts",
            "governance/pseudonym",
            "governance/audit",
            "governance/disclosure_control",
            "governance/cell_key",
            "governance/teams",
            "governance/vault",
        ],
    ),
    ("data", &["ingest", "session", "sql", "job", "schedule"]),
    (
        "stages",
        &[
            "features",
            "model",
            "service_evaluation",
            "quality",
            "changes",
            "outputs",
        ],
    ),
    (
        "workflows",
        &[
            "run",
            "serve",
            "demo",
            "service_evaluation_check",
            "synth",
            "gate",
            "history",
            "report",
            "scheduler",
            "cluster",
            "pseudonymise",
            "feedback",
            "main",
            "lib",
        ],
    ),
];

/// The modules that may import `synth` (synthetic data): itself and the commands that
/// make or check synthetic data. No production module may.
const SYNTH_USERS: &[&str] = &["synth", "main", "demo", "service_evaluation_check"];

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, ms))| ms.iter().map(move |m| (i, *m)))
        .filter(|(_, m)| module == *m || module.starts_with(&format!("{m}/")))
        .max_by_key(|(_, m)| m.len())
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("module {module} is in no layer of layers.rs"))
}

/// `crate::a::b` as the module path `a/b` if that is a module of ours, else `a`.
fn imported(path: &str, modules: &[String]) -> String {
    let mut parts = path.split("::");
    let a = parts.next().unwrap_or_default();
    match parts.next() {
        Some(b) if modules.contains(&format!("{a}/{b}")) => format!("{a}/{b}"),
        _ => a.to_string(),
    }
}

/// Every module of `src` (`a/b` for `src/a/b.rs` or `src/a/b/mod.rs`) but this one,
/// with its code outside its tests.
fn sources() -> Vec<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let module_of = |p: &std::path::Path| {
        let rel = p.strip_prefix(&src).unwrap().with_extension("");
        let m = rel.to_string_lossy().replace('\\', "/");
        m.strip_suffix("/mod").map(str::to_string).unwrap_or(m)
    };
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            (module_of(p), code.to_string())
        })
        .filter(|(m, _)| m != "layers")
        .collect()
}

/// Every module with the `crate::` paths its code outside its tests names, as module
/// paths.
fn imports() -> Vec<(String, Vec<String>)> {
    let sources = sources();
    let modules: Vec<String> = sources.iter().map(|(m, _)| m.clone()).collect();
    sources
        .iter()
        .map(|(m, code)| {
            let to = crate_paths(code)
                .iter()
                .map(|path| imported(path, &modules))
                .collect();
            (m.clone(), to)
        })
        .collect()
}

/// Functions that are tables of data, not logic: long by nature.
const DATA_TABLES: &[&str] = &[];

/// Each function outside tests (`module::name`) with its length in lines, from its
/// `fn` line to the closing brace at the same indentation.
fn function_lengths(module: &str, code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        // `pub`, `pub(crate)`, `pub(super)`, `pub(in path)`.
        let t = match t.strip_prefix("pub") {
            Some(r) if r.starts_with('(') => r.split_once(") ").map_or(t, |(_, r)| r),
            Some(r) => r.strip_prefix(' ').unwrap_or(t),
            None => t,
        };
        let t = t.strip_prefix("async ").unwrap_or(t);
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{}}}", " ".repeat(indent));
        if let Some(end) = lines[i..].iter().position(|l| l.starts_with(&close)) {
            out.push((format!("{module}::{name}"), end + 1));
        }
    }
    out
}

#[test]
fn no_function_is_over_100_lines() {
    let long: Vec<String> = sources()
        .iter()
        .flat_map(|(m, code)| function_lengths(m, code))
        .filter(|(name, n)| *n > 100 && !DATA_TABLES.contains(&name.as_str()))
        .map(|(name, n)| format!("{name} ({n} lines)"))
        .collect();
    assert!(
        long.is_empty(),
        "functions over 100 lines (split them into steps with names): {long:?}"
    );
}

#[test]
fn function_lengths_are_counted_to_the_closing_brace() {
    let code = "fn a() {\n    1\n}\n    pub async fn b(\n        x: u8,\n    ) {\n    }\n\
                pub(super) fn c() {\n}\n";
    assert_eq!(
        function_lengths("m", code),
        vec![
            ("m::a".to_string(), 3),
            ("m::b".to_string(), 4),
            ("m::c".to_string(), 2)
        ]
    );
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let mut found = std::collections::BTreeSet::new();
    for (m, to) in imports() {
        for to in to {
            if layer(&to) > layer(&m) {
                found.insert(format!("{m} -> {to}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "imports from a layer above (see ARCHITECTURE.md): {found:?}"
    );
}

#[test]
fn no_production_module_imports_synth() {
    let found: Vec<String> = imports()
        .into_iter()
        .filter(|(m, _)| !SYNTH_USERS.contains(&m.as_str()))
        .filter(|(_, to)| to.iter().any(|t| t == "synth" || t.starts_with("synth/")))
        .map(|(m, _)| m)
        .collect();
    assert!(
        found.is_empty(),
        "only {SYNTH_USERS:?} may import synth (synthetic data); these do: {found:?}"
    );
}

#[test]
fn the_layer_of_a_module_is_its_longest_prefix() {
    assert_eq!(layer("governance/optouts"), 1);
    assert_eq!(layer("gate"), 4);
    assert_eq!(layer("governance/audit"), 1);
    assert_eq!(layer("ingest/contract"), 2);
    assert_eq!(layer("job"), 2);
    assert_eq!(layer("model/terms"), 3);
}

/// Every `crate::x::y` in a text, as `x::y`; `crate::{x, y::z}` gives `x` and `y::z`.
fn crate_paths(code: &str) -> Vec<String> {
    let path = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
            .trim_end_matches(':')
            .to_string()
    };
    let mut out = Vec::new();
    for (i, m) in code.match_indices("crate::") {
        let rest = &code[i + m.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(inner.split(',').map(path));
        } else {
            out.push(path(rest));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

#[test]
fn crate_paths_reads_plain_and_grouped_imports() {
    assert_eq!(
        crate_paths("use crate::a::b;\nuse crate::{c, d::e};\nlet x = crate::f(1);"),
        vec!["a::b", "c", "d::e", "f"]
    );
}

/// What must not leave the gate never runs on a cluster (issue 17): the modules that
/// hold keys, identities or answer commissioners cannot open a cluster session, and the
/// cluster's modules import none of them.
#[test]
fn keys_vault_gate_and_disclosure_control_never_reach_a_cluster() {
    const GATE_SIDE: &[&str] = &["governance", "gate", "pseudonymise", "serve", "feedback"];
    const CLUSTER: &[&str] = &["cluster", "session/cluster"];
    let is = |m: &str, set: &[&str]| {
        set.iter()
            .any(|s| m == *s || m.starts_with(&format!("{s}/")))
    };
    let mut crossings = Vec::new();
    for (module, to) in imports() {
        for t in &to {
            let gate_to_cluster = is(&module, GATE_SIDE) && is(t, CLUSTER);
            let cluster_to_gate = is(&module, CLUSTER) && is(t, GATE_SIDE);
            if gate_to_cluster || cluster_to_gate {
                crossings.push(format!("{module} -> {t}"));
            }
        }
    }
    assert!(crossings.is_empty(), "{crossings:?}");
    // Not vacuous: the modules it names exist, and an import of the cluster's session
    // is seen as one.
    let modules: Vec<String> = sources().into_iter().map(|(m, _)| m).collect();
    for m in CLUSTER.iter().chain(GATE_SIDE) {
        assert!(modules.iter().any(|x| is(x, &[m])), "no module {m}");
    }
    assert_eq!(
        imported("session::cluster::connect", &modules),
        "session/cluster"
    );
}
