//! Metric primitives shared by the gateway and the logic tier: each metric
//! is declared once, with its name and help text, next to an enum that
//! indexes it; values are relaxed atomics; a scrape writes the Prometheus
//! text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

/// Declares an enum of metrics and the table of their names and help texts:
/// `metric_table! { pub Counter, COUNTERS, Variant => "name", "help"; ... }`.
#[macro_export]
macro_rules! metric_table {
    ($vis:vis $enum:ident, $table:ident, $($variant:ident => $name:literal, $help:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $enum { $($variant,)* }
        $vis const $table: &[(&str, &str)] = &[$(($name, $help),)*];
    };
}

/// One atomic value per metric of a table.
#[derive(Debug)]
pub struct Cells(Box<[AtomicI64]>);

impl Cells {
    pub fn new(len: usize) -> Cells {
        Cells((0..len).map(|_| AtomicI64::new(0)).collect())
    }

    pub fn add(&self, index: usize, delta: i64) {
        self.0[index].fetch_add(delta, Relaxed);
    }

    pub fn set(&self, index: usize, value: i64) {
        self.0[index].store(value, Relaxed);
    }

    pub fn get(&self, index: usize) -> i64 {
        self.0[index].load(Relaxed)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Writes one metric family: its HELP and TYPE lines, then one sample per
/// `(label value, value)`; a `None` label writes the bare name.
pub fn write_family(
    out: &mut String,
    name: &str,
    help: &str,
    kind: Kind,
    label: &str,
    samples: &[(Option<&str>, i64)],
) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    for (value_label, value) in samples {
        match value_label {
            Some(l) => {
                let _ = writeln!(out, "{name}{{{label}=\"{l}\"}} {value}");
            }
            None => {
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}

/// Writes every metric of a table whose values `value(i)` gives.
pub fn write_table(
    out: &mut String,
    table: &[(&str, &str)],
    kind: Kind,
    value: impl Fn(usize) -> i64,
) {
    for (i, (name, help)) in table.iter().enumerate() {
        write_family(out, name, help, kind, "", &[(None, value(i))]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::metric_table! { Things, THINGS,
        Apples => "test_apples_total", "Apples seen.";
        Pears => "test_pears", "Pears now.";
    }

    #[test]
    fn renders_prometheus_text() {
        let cells = Cells::new(THINGS.len());
        cells.add(Things::Apples as usize, 3);
        cells.set(Things::Pears as usize, -1);
        let mut out = String::new();
        write_table(&mut out, THINGS, Kind::Counter, |i| cells.get(i));
        assert!(
            out.contains("# TYPE test_apples_total counter\ntest_apples_total 3\n"),
            "{out}"
        );
        assert!(out.contains("test_pears -1\n"));
        let mut out = String::new();
        write_family(
            &mut out,
            "x_total",
            "X.",
            Kind::Counter,
            "code",
            &[(Some("A"), 1)],
        );
        assert_eq!(
            out,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{code=\"A\"} 1\n"
        );
    }
}
