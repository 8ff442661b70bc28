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

/// Bucket upper bounds, in seconds, for latencies from tens of
/// microseconds (a commit on a fast disk) to seconds (a webhook timing out).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram: a count per bucket, the sum and the count, each a
/// relaxed atomic, so any thread observes without a lock.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in microseconds, ascending.
    bounds_us: Box<[u64]>,
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: Box<[AtomicI64]>,
    sum_us: AtomicI64,
}

impl Histogram {
    /// A histogram over `bounds` (seconds, ascending).
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds_us: bounds.iter().map(|s| (s * 1e6).round() as u64).collect(),
            buckets: (0..=bounds.len()).map(|_| AtomicI64::new(0)).collect(),
            sum_us: AtomicI64::new(0),
        }
    }

    /// A histogram over [`LATENCY_BUCKETS`].
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BUCKETS)
    }

    pub fn observe(&self, elapsed: std::time::Duration) {
        self.observe_us(elapsed.as_micros().min(i64::MAX as u128) as u64);
    }

    pub fn observe_us(&self, us: u64) {
        let bucket = self.bounds_us.partition_point(|bound| *bound < us);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_us
            .fetch_add(us.min(i64::MAX as u64) as i64, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> i64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Writes this histogram's samples (no HELP or TYPE line), with
    /// `labels` (`key="value"` pairs, comma-separated, or empty) on each.
    fn write_samples(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = match self.bounds_us.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Writes one histogram family: HELP, TYPE, then each histogram's samples
/// under its value of `label` (`None`: no label).
pub fn write_histograms(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    histograms: &[(Option<&str>, &Histogram)],
) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
    for (value, histogram) in histograms {
        let labels = match value {
            Some(value) => format!("{label}=\"{value}\""),
            None => String::new(),
        };
        histogram.write_samples(out, name, &labels);
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

    #[test]
    fn histogram_counts_into_cumulative_buckets() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe_us(500);
        h.observe_us(1000);
        h.observe_us(5000);
        h.observe_us(50_000);
        let mut out = String::new();
        write_histograms(&mut out, "x_seconds", "X.", "route", &[(Some("/a"), &h)]);
        assert_eq!(
            out,
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{route=\"/a\",le=\"0.001\"} 2\n\
             x_seconds_bucket{route=\"/a\",le=\"0.01\"} 3\n\
             x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\n\
             x_seconds_sum{route=\"/a\"} 0.0565\n\
             x_seconds_count{route=\"/a\"} 4\n"
        );
        assert_eq!(h.count(), 4);
        let mut out = String::new();
        write_histograms(&mut out, "y_seconds", "Y.", "", &[(None, &h)]);
        assert!(
            out.contains("y_seconds_bucket{le=\"+Inf\"} 4\ny_seconds_sum 0.0565\n"),
            "{out}"
        );
    }
}
