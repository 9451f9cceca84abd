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
    ("data", &["ingest", "session", "sql", "job"]),
    (
        "stages",
        &["features", "model", "outcomes", "quality", "outputs"],
    ),
    (
        "workflows",
        &[
            "run",
            "serve",
            "demo",
            "outcomes_check",
            "synth",
            "governance/gate",
            "governance/pseudonymise",
            "governance/feedback",
            "main",
            "lib",
        ],
    ),
];

/// The modules that may import `synth` (synthetic data): itself and the commands that
/// make or check synthetic data. No production module may.
const SYNTH_USERS: &[&str] = &["synth", "main", "demo", "outcomes_check"];

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

/// Every module of `src` (`a/b` for `src/a/b.rs` or `src/a/b/mod.rs`) with the
/// `crate::` paths its code outside its tests names, as module paths.
fn imports() -> Vec<(String, Vec<String>)> {
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
    let modules: Vec<String> = files.iter().map(|p| module_of(p)).collect();
    files
        .iter()
        .zip(&modules)
        .filter(|(_, m)| *m != "layers")
        .map(|(p, m)| {
            let text = std::fs::read_to_string(p).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            let to = crate_paths(code)
                .iter()
                .map(|path| imported(path, &modules))
                .collect();
            (m.clone(), to)
        })
        .collect()
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
    assert_eq!(layer("governance/gate"), 4);
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
