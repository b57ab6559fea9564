//! The shape of the code, checked from its `use` lines: no module of any crate depends on
//! itself through others (a cycle), and the broker's HTTP layer (`routes`) does not reach
//! around the domain into the store or the provider client.
//!
//! A module is a file (`routes/browser.rs` is `routes::browser`); it depends on every module it
//! names with a `crate::…` or `super::…` path. A parent's `mod` lines and its children's local
//! paths are structure, not dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules of the crate whose sources are in `src`, with the modules each one names.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect(src, &mut files);
    let module_of = |file: &Path| -> String {
        let relative = file.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts
            .last()
            .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
        {
            parts.pop();
        }
        parts.join("::")
    };
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    // The longest module that `path` (segments from the crate root) lies in.
    let resolve = |path: &[&str]| -> Option<String> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    let reference = regex::Regex::new(r"\b(crate|super)((?:::\w+)+)").unwrap();
    let group = regex::Regex::new(r"\buse (crate|super)((?:::\w+)*)::\{([^;]*)\};").unwrap();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        let source = std::fs::read_to_string(file).unwrap();
        let source = source.split("#[cfg(test)]\nmod tests").next().unwrap();
        // Comments name modules without depending on them.
        let source: String = source
            .lines()
            .map(|line| line.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let source = source.as_str();
        let base = |root: &str| -> Vec<String> {
            let mut here: Vec<String> = if module.is_empty() {
                Vec::new()
            } else {
                module.split("::").map(str::to_owned).collect()
            };
            match root {
                "crate" => Vec::new(),
                _ => {
                    // `super` of a `mod.rs` file is its parent's parent's child: the same
                    // arithmetic, as the module path names the directory.
                    here.pop();
                    here
                }
            }
        };
        let mut targets = BTreeSet::new();
        let mut add = |root: &str, rest: &str| {
            let mut path = base(root);
            path.extend(
                rest.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(target) = resolve(&path) {
                if target != module && !module.starts_with(&format!("{target}::")) {
                    targets.insert(target);
                }
            }
        };
        for c in reference.captures_iter(source) {
            add(&c[1], &c[2]);
        }
        for c in group.captures_iter(source) {
            for item in c[3].split(',') {
                let item = item.trim().trim_start_matches('{');
                let first = item.split("::").next().unwrap_or_default().trim();
                if !first.is_empty() && first != "self" {
                    add(&c[1], &format!("{}::{}", &c[2], first));
                }
            }
        }
        graph.insert(module, targets);
    }
    graph
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Every cycle, as the modules on it (each cycle once).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    let min = cycle.iter().min().unwrap().clone();
                    let i = cycle.iter().position(|m| *m == min).unwrap();
                    cycle.rotate_left(i);
                    found.insert(cycle);
                } else if !path.contains(next) && next > start {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

#[test]
fn no_module_depends_on_itself_in_any_crate() {
    for name in ["providers", "broker", "git-askpass", "cli", "tests"] {
        let graph = graph(&crate_src(name));
        assert!(graph.len() > 1 || name == "cli", "{name}: {graph:?}");
        let cycles = cycles(&graph);
        assert!(
            cycles.is_empty(),
            "{name}: module cycles (break each by moving what both need into a module of its own): {cycles:#?}"
        );
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    g.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    g.insert("d".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    let real = graph(&crate_src("broker"));
    assert!(
        real["routes::browser"].contains("links") && real["links"].contains("store"),
        "the parser finds uses: {:?}",
        real["routes::browser"]
    );
}

/// What the HTTP layer may not name: it calls domain functions, which use these.
const BELOW_THE_DOMAIN: &[&str] = &["store", "upstream", "crypto"];

#[test]
fn routes_do_not_reach_below_the_domain() {
    let graph = graph(&crate_src("broker"));
    let mut reaching = Vec::new();
    for (module, targets) in &graph {
        if module == "routes" || module.starts_with("routes::") {
            for target in targets {
                if BELOW_THE_DOMAIN
                    .iter()
                    .any(|b| target == b || target.starts_with(&format!("{b}::")))
                {
                    reaching.push((module.clone(), target.clone()));
                }
            }
        }
    }
    assert!(
        reaching.is_empty(),
        "routes reaching below the domain (call a domain function instead): {reaching:?}"
    );
}

/// The domain says what went wrong (`failure::Failure`), never the HTTP answer: only the HTTP
/// layer and its glue name `error` (`ApiError`), and the failure type knows nothing of HTTP.
#[test]
fn the_domain_speaks_in_failures_not_http_answers() {
    let graph = graph(&crate_src("broker"));
    const DOMAIN: &[&str] = &[
        "accounts",
        "device",
        "linking",
        "links",
        "link_secrets",
        "login_flow",
        "refresh",
        "revocations",
        "sign_in",
        "oidc",
        "oidc::rules",
        "oidc::settings",
        "oidc::verify",
        "failure",
        "dev_login",
        "single_flight",
        "redirects",
        "auth_failures",
        "clock",
    ];
    for module in DOMAIN {
        let targets = graph
            .get(*module)
            .unwrap_or_else(|| panic!("no module {module}"));
        assert!(
            !targets.contains("error") && !targets.iter().any(|t| t.starts_with("routes")),
            "{module} names the HTTP layer: {targets:?}"
        );
    }
    let failure = std::fs::read_to_string(crate_src("broker").join("failure.rs")).unwrap();
    assert!(!failure.contains("axum") && !failure.contains("StatusCode"));
}

/// Only the broker knows HTTP servers and storage: the other crates' manifests name none of them.
#[test]
fn only_the_broker_knows_http_servers_and_storage() {
    for name in ["providers", "git-askpass", "cli"] {
        let manifest = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(name)
                .join("Cargo.toml"),
        )
        .unwrap();
        for server_or_store in ["axum", "hyper", "sled", "tokio-postgres", "deadpool"] {
            assert!(
                !manifest
                    .lines()
                    .any(|l| l.trim_start().starts_with(server_or_store)),
                "{name} depends on {server_or_store}"
            );
        }
    }
}
