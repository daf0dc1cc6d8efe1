//! `meshclass compile PATH... [--json]`.

use std::{
    io::{BufWriter, Write},
    path::PathBuf,
};

use crate::{
    plan::{CompileOptions, Match, Plan},
    registry::{self, Limits, Severity},
};

/// Compiles the registry at `paths` and prints the plan: 0 ok, 1 invalid, 2 usage or I/O error.
pub fn run(paths: &[PathBuf], json: bool, options: CompileOptions) -> i32 {
    let loaded = match registry::load_paths(paths, &Limits::default()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    for d in &loaded.diagnostics {
        eprintln!("{}: {d}", d.severity);
    }
    if loaded
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error)
    {
        eprintln!("invalid registry: nothing compiled");
        return 1;
    }
    let mut plan = registry::compile(&loaded.registry, options);
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    // Validation warnings belong to the plan too, before the compiler's own.
    let mut warnings: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.to_string())
        .collect();
    warnings.append(&mut plan.warnings);
    plan.warnings = warnings;

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &plan)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_table(&mut out, &plan)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: writing the plan: {e}");
            2
        }
    }
}

fn describe(m: &Match) -> (&'static str, String, String, u16) {
    match m {
        Match::Ip {
            addr,
            port,
            protocol,
        } => ("ip", addr.to_string(), format!("{protocol:?}"), *port),
        Match::Cidr {
            cidr,
            port,
            protocol,
        } => (
            "cidr",
            format!("{}/{}", cidr.addr, cidr.len),
            format!("{protocol:?}"),
            *port,
        ),
        Match::Sni { name, port } => ("sni", name.clone(), "Tcp".to_owned(), *port),
        Match::Host { name, port } => ("host", name.clone(), "Tcp".to_owned(), *port),
        Match::Port { port, protocol } => ("port", "*".to_owned(), format!("{protocol:?}"), *port),
    }
}

/// Prints the plan as aligned columns.
fn write_table(out: &mut impl Write, plan: &Plan) -> std::io::Result<()> {
    let row = |e: &crate::plan::Entry| -> [String; 6] {
        let (kind, what, proto, port) = describe(&e.matcher);
        [
            kind.to_owned(),
            what,
            proto.to_lowercase(),
            port.to_string(),
            e.verdict.name().to_owned(),
            e.service.clone(),
        ]
    };
    let header = [
        "MATCH",
        "DESTINATION",
        "PROTO",
        "PORT",
        "VERDICT",
        "SERVICE",
    ];
    // Two passes (widths, then lines), so that no row is kept in memory.
    let mut widths = header.map(str::len);
    for e in &plan.entries {
        for (w, c) in widths.iter_mut().zip(row(e).iter()) {
            *w = (*w).max(c.len());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 6]| -> std::io::Result<()> {
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:<w4$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        )
    };
    line(out, header)?;
    for e in &plan.entries {
        let r = row(e);
        line(out, [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]])?;
    }
    if !plan.dns.is_empty() {
        writeln!(out)?;
        writeln!(out, "names to resolve:")?;
        for d in &plan.dns {
            let ports: Vec<String> = d
                .ports
                .iter()
                .map(|(p, l4)| format!("{p}/{l4:?}").to_lowercase())
                .collect();
            writeln!(
                out,
                "  {}  ports {}  {}  {}",
                d.name,
                ports.join(","),
                d.verdict.name(),
                d.service
            )?;
        }
    }
    writeln!(
        out,
        "{} services, {} entries, {} names to resolve, {} warnings",
        plan.services.len(),
        plan.entries.len(),
        plan.dns.len(),
        plan.warnings.len()
    )?;
    Ok(())
}
