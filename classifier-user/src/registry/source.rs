//! Reading registry files: paths, documents, `kind: List`, and dispatch by kind.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    de::from_node,
    diag::{Diagnostic, Problem, Severity},
    model::{Meta, Origin, Registry},
    path::FieldPath,
    raw::{RawMeta, RawPod, RawService, RawServiceEntrySpec, RawWorkloadEntrySpec},
    validate::{self, Ctx},
    yaml::{parse_documents, Limits, Mark, Node, Value, YamlError},
};

/// A registry read from files, with everything found wrong or worth a warning.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub registry: Registry,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// A path that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("-: standard input named more than once")]
    StdinTwice,
}

const ISTIO_GROUP_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// Reads every path (files, directories searched for `*.yaml`/`*.yml`, `-` for stdin).
pub fn load_paths(paths: &[PathBuf], limits: &Limits) -> Result<Loaded, ReadError> {
    let mut loaded = Loaded::default();
    let mut files = Vec::new();
    let mut stdin_seen = false;
    for p in paths {
        if p.as_os_str() == "-" {
            if stdin_seen {
                return Err(ReadError::StdinTwice);
            }
            stdin_seen = true;
            files.push(None);
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|source| ReadError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            files.extend(found.into_iter().map(Some));
        } else {
            files.push(Some(p.clone()));
        }
    }
    // A file named twice (directly and through its directory) is read once.
    let mut canonical = std::collections::HashSet::new();
    files.retain(|f| match f {
        None => true,
        Some(p) => canonical.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
    });
    // Files are read and checked in parallel; results are merged in the order of `files`.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        .min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<Result<Loaded, ReadError>>> =
        (0..files.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..workers {
            let tx = tx.clone();
            let files = &files;
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(f) = files.get(i) else { break };
                if tx.send((i, load_one(f.as_deref(), limits))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
    });
    // Exact capacities: the registry's vectors are its largest allocations.
    let (mut ses, mut wes, mut pods, mut svcs) = (0, 0, 0, 0);
    for r in results.iter().flatten().flatten() {
        ses += r.registry.service_entries.len();
        wes += r.registry.workload_entries.len();
        pods += r.registry.pods.len();
        svcs += r.registry.services.len();
    }
    loaded.registry.service_entries.reserve_exact(ses);
    loaded.registry.workload_entries.reserve_exact(wes);
    loaded.registry.pods.reserve_exact(pods);
    loaded.registry.services.reserve_exact(svcs);
    for r in results.into_iter().flatten() {
        let mut one = r?;
        loaded.diagnostics.append(&mut one.diagnostics);
        let reg = &mut loaded.registry;
        reg.service_entries
            .append(&mut one.registry.service_entries);
        reg.workload_entries
            .append(&mut one.registry.workload_entries);
        reg.pods.append(&mut one.registry.pods);
        reg.services.append(&mut one.registry.services);
    }
    let mut duplicates = check_duplicates(&loaded.registry);
    loaded.diagnostics.append(&mut duplicates);
    Ok(loaded)
}

/// Errors for resources defined twice (same kind, namespace and name), at the later ones.
fn check_duplicates(reg: &Registry) -> Vec<Diagnostic> {
    let metas = reg
        .service_entries
        .iter()
        .map(|r| ("ServiceEntry", &r.meta))
        .chain(
            reg.workload_entries
                .iter()
                .map(|r| ("WorkloadEntry", &r.meta)),
        )
        .chain(reg.pods.iter().map(|r| ("Pod", &r.meta)))
        .chain(reg.services.iter().map(|r| ("Service", &r.meta)));
    let mut seen: HashMap<(&str, &str, &str), &Origin> = HashMap::with_capacity(reg.len());
    let mut out = Vec::new();
    for (kind, meta) in metas {
        let key = (kind, meta.namespace.as_str(), meta.name.as_str());
        match seen.get(&key) {
            Some(first) => out.push(Diagnostic {
                severity: Severity::Error,
                file: meta.origin.file.clone(),
                mark: Some(meta.origin.mark),
                resource: Some(format!("{kind} {}/{}", meta.namespace, meta.name)),
                path: FieldPath::root("metadata").key("name"),
                problem: Problem::Duplicate {
                    first: format!("{}:{}", first.file, first.mark),
                },
            }),
            None => {
                seen.insert(key, &meta.origin);
            }
        }
    }
    out
}

/// Reads one file (`None`: standard input).
fn load_one(path: Option<&Path>, limits: &Limits) -> Result<Loaded, ReadError> {
    let mut loaded = Loaded::default();
    match path {
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(limits.max_file_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|source| ReadError::Io {
                    path: PathBuf::from("-"),
                    source,
                })?;
            load_bytes(&mut loaded, "-", &bytes, limits);
        }
        Some(path) => {
            let name = path.display().to_string();
            let size = std::fs::metadata(path)
                .map_err(|source| ReadError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .len();
            if size > limits.max_file_bytes {
                loaded.diagnostics.push(file_error(
                    &Arc::from(name.as_str()),
                    None,
                    YamlError::FileTooLarge {
                        size,
                        limit: limits.max_file_bytes,
                    },
                ));
                return Ok(loaded);
            }
            let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            load_bytes(&mut loaded, &name, &bytes, limits);
        }
    }
    Ok(loaded)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ReadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ReadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| ReadError::Io {
            path: path.clone(),
            source,
        })?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

fn file_error(file: &Arc<str>, mark: Option<Mark>, e: YamlError) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.clone(),
        mark,
        resource: None,
        path: FieldPath::default(),
        problem: Problem::Yaml(e),
    }
}

/// Reads the documents of one file's bytes into `loaded`.
pub fn load_bytes(loaded: &mut Loaded, name: &str, bytes: &[u8], limits: &Limits) {
    let file: Arc<str> = Arc::from(name);
    if bytes.len() as u64 > limits.max_file_bytes {
        loaded.diagnostics.push(file_error(
            &file,
            None,
            YamlError::FileTooLarge {
                size: bytes.len() as u64,
                limit: limits.max_file_bytes,
            },
        ));
        return;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => {
            loaded
                .diagnostics
                .push(file_error(&file, None, YamlError::NotUtf8));
            return;
        }
    };
    load_str(loaded, &file, text, limits);
}

/// Reads the documents of one file's text into `loaded`.
pub fn load_str(loaded: &mut Loaded, file: &Arc<str>, text: &str, limits: &Limits) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    parse_documents(text, limits, 0, |doc| match doc {
        Err((mark, e)) => loaded.diagnostics.push(file_error(file, Some(mark), e)),
        Ok(node) => document(loaded, file, &node),
    });
}

fn document(loaded: &mut Loaded, file: &Arc<str>, node: &Node) {
    match &node.value {
        Value::Null => {}
        Value::Map(_) => {
            let kind = node.get("kind").and_then(Node::as_str).unwrap_or("");
            if kind == "List" || (kind.ends_with("List") && node.get("items").is_some()) {
                if let Some(Node {
                    value: Value::Seq(items),
                    ..
                }) = node.get("items")
                {
                    // A typed list's items may leave out the kind and apiVersion it gives
                    // (`kind: List` is core's, and its items say their own).
                    let api = node.get("apiVersion").and_then(Node::as_str);
                    let defaults = kind_default(kind).map(|k| (k, api.unwrap_or("")));
                    for item in items {
                        resource(loaded, file, item, defaults);
                    }
                }
            } else {
                resource(loaded, file, node, None);
            }
        }
        _ => loaded.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: file.clone(),
            mark: Some(node.mark),
            resource: None,
            path: FieldPath::default(),
            problem: Problem::NotAMapping,
        }),
    }
}

/// The item kind of a typed list such as `ServiceEntryList`.
fn kind_default(list_kind: &str) -> Option<&str> {
    list_kind.strip_suffix("List").filter(|k| !k.is_empty())
}

/// The registry's kind that `kind` spells, ignoring case (`""` for none).
fn meant_kind(kind: &str) -> &'static str {
    ["ServiceEntry", "WorkloadEntry", "Pod", "Service"]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(kind))
        .unwrap_or("")
}

/// What a skipped resource was surely meant to be, said as the kind and apiVersion to write:
/// a registry kind spelt in another case, a ServiceEntry or WorkloadEntry of a version Istio
/// does not have, or a registry kind without apiVersion. A `Service` of another group (a
/// Knative Service, say) is another resource, and skipped with a note.
fn meant(kind: &str, api_version: &str) -> Option<String> {
    let k = meant_kind(kind);
    let istio = matches!(k, "ServiceEntry" | "WorkloadEntry");
    let wrong = !k.is_empty()
        && (k != kind
            || api_version.is_empty()
            || (istio && !ISTIO_GROUP_VERSIONS.contains(&api_version)));
    wrong.then(|| {
        let versions = if istio {
            "networking.istio.io/v1 (or v1beta1, v1alpha3)"
        } else {
            "v1"
        };
        format!("a {k} is written `kind: {k}` with `apiVersion: {versions}`")
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    ServiceEntry,
    WorkloadEntry,
    Pod,
    Service,
}

fn resource(loaded: &mut Loaded, file: &Arc<str>, node: &Node, defaults: Option<(&str, &str)>) {
    if !matches!(node.value, Value::Map(_)) {
        loaded.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: file.clone(),
            mark: Some(node.mark),
            resource: None,
            path: FieldPath::default(),
            problem: Problem::NotAMapping,
        });
        return;
    }
    let kind_text = node
        .get("kind")
        .and_then(Node::as_str)
        .or(defaults.map(|d| d.0))
        .unwrap_or("");
    let api_version = node
        .get("apiVersion")
        .and_then(Node::as_str)
        .or(defaults.map(|d| d.1))
        .unwrap_or("");
    let kind = match (kind_text, api_version) {
        ("ServiceEntry", v) if ISTIO_GROUP_VERSIONS.contains(&v) => Kind::ServiceEntry,
        ("WorkloadEntry", v) if ISTIO_GROUP_VERSIONS.contains(&v) => Kind::WorkloadEntry,
        ("Pod", "v1") => Kind::Pod,
        ("Service", "v1") => Kind::Service,
        _ => {
            if let Some(expected) = meant(kind_text, api_version) {
                let path = if kind_text != meant_kind(kind_text) {
                    "kind"
                } else {
                    "apiVersion"
                };
                let field = node.get(path);
                loaded.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    file: file.clone(),
                    mark: Some(field.map_or(node.mark, |n| n.mark)),
                    resource: None,
                    path: FieldPath::root(path),
                    problem: Problem::MistypedKind {
                        kind: kind_text.to_owned(),
                        api_version: api_version.to_owned(),
                        expected,
                    },
                });
                return;
            }
            loaded.diagnostics.push(Diagnostic {
                severity: Severity::Note,
                file: file.clone(),
                mark: Some(node.mark),
                resource: None,
                path: FieldPath::default(),
                problem: Problem::SkippedKind {
                    kind: kind_text.to_owned(),
                    api_version: api_version.to_owned(),
                },
            });
            return;
        }
    };

    let raw_meta: RawMeta = match node.get("metadata") {
        None => RawMeta::default(),
        Some(m) => match from_node(m) {
            Ok(m) => m,
            Err(e) => {
                loaded
                    .diagnostics
                    .push(shape(file, kind_text.to_owned(), "metadata", e));
                return;
            }
        },
    };
    let namespace = raw_meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let name = raw_meta.name.clone().unwrap_or_default();
    let resource_name = format!("{kind_text} {namespace}/{name}");
    let mut ctx = Ctx::new(file, node, resource_name.clone());
    if name.is_empty() {
        ctx.error(FieldPath::root("metadata").key("name"), Problem::Required);
    }
    let creation_timestamp = raw_meta.creation_timestamp.as_deref().and_then(|t| {
        let parsed = validate::rfc3339_ns(t);
        if parsed.is_none() {
            ctx.error(
                FieldPath::root("metadata").key("creationTimestamp"),
                Problem::InvalidTimestamp {
                    value: t.to_owned(),
                },
            );
        }
        parsed
    });
    let meta = Meta {
        namespace,
        name,
        labels: raw_meta.labels.clone().unwrap_or_default().into(),
        creation_timestamp,
        origin: Origin {
            file: file.clone(),
            mark: FieldPath::root("metadata").key("name").locate(node),
        },
    };

    match kind {
        Kind::ServiceEntry | Kind::WorkloadEntry => {
            validate::check_meta_annotations(&mut ctx, &raw_meta);
            let spec = match node.get("spec") {
                None
                | Some(Node {
                    value: Value::Null, ..
                }) => {
                    ctx.error(FieldPath::root("spec"), Problem::Required);
                    None
                }
                Some(s) => Some(s),
            };
            if let Some(spec) = spec {
                if kind == Kind::ServiceEntry {
                    match from_node::<RawServiceEntrySpec>(spec) {
                        Ok(raw) => {
                            let has_errors = ctx.has_errors();
                            if let Some(se) = validate::service_entry(&mut ctx, meta, &raw) {
                                if !has_errors {
                                    loaded.registry.service_entries.push(se);
                                }
                            }
                        }
                        Err(e) => ctx.out.push(shape(file, resource_name, "spec", e)),
                    }
                } else {
                    match from_node::<RawWorkloadEntrySpec>(spec) {
                        Ok(raw) => {
                            let has_errors = ctx.has_errors();
                            if let Some(we) = validate::workload_entry(&mut ctx, meta, &raw) {
                                if !has_errors {
                                    loaded.registry.workload_entries.push(we);
                                }
                            }
                        }
                        Err(e) => ctx.out.push(shape(file, resource_name, "spec", e)),
                    }
                }
            }
        }
        Kind::Pod => match from_node::<RawPod>(node) {
            Ok(raw) => {
                let terminating = raw_meta.deletion_timestamp.is_some();
                if let Some(p) = validate::pod(&mut ctx, meta, &raw, terminating) {
                    loaded.registry.pods.push(p);
                }
            }
            Err(e) => ctx.out.push(shape(file, resource_name, "", e)),
        },
        Kind::Service => match from_node::<RawService>(node) {
            Ok(raw) => {
                if let Some(s) = validate::kube_service(&mut ctx, meta, &raw) {
                    loaded.registry.services.push(s);
                }
            }
            Err(e) => ctx.out.push(shape(file, resource_name, "", e)),
        },
    }
    loaded.diagnostics.append(&mut ctx.out);
}

fn shape(file: &Arc<str>, resource: String, prefix: &str, e: super::de::ShapeError) -> Diagnostic {
    let path = if prefix.is_empty() {
        e.path.clone()
    } else {
        e.path.clone().under(&FieldPath::root(prefix))
    };
    Diagnostic {
        severity: Severity::Error,
        file: file.clone(),
        mark: e.mark,
        resource: Some(resource),
        path,
        problem: Problem::Shape(e),
    }
}
