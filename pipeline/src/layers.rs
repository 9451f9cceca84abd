//! The layers of ARCHITECTURE.md, checked: each module's `crate::` imports (outside its
//! tests) may name only its own layer or those below. The known exceptions are listed;
//! the list must shrink as they are removed (issue #11), and nothing may join it.

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

/// Imports across layers that exist today, as `module -> import`.
const KNOWN_EXCEPTIONS: &[&str] = &[
    "governance/vault -> ingest/contract",
    "job -> model",
    "job -> outcomes",
    "quality -> run",
    "session -> model",
];

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

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
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
    let mut found = std::collections::BTreeSet::new();
    for (p, m) in files.iter().zip(&modules) {
        if m == "layers" {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for path in crate_paths(code) {
            let to = imported(&path, &modules);
            if layer(&to) > layer(m) {
                found.insert(format!("{m} -> {to}"));
            }
        }
    }
    let known: std::collections::BTreeSet<String> =
        KNOWN_EXCEPTIONS.iter().map(|s| s.to_string()).collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "imports from a layer above (see ARCHITECTURE.md): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "these exceptions are gone: remove them from KNOWN_EXCEPTIONS and ARCHITECTURE.md: {gone:?}"
    );
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
