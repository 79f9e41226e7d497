//! Numbers out of samples (percentiles, medians), the machine description, the printed tables
//! and a small JSON writer (the benchmark has no serde_json).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Nearest-rank percentile of sorted values (`p` in 0..=1).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of values (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What the results were measured on.
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub os: String,
    pub memory: String,
}

impl Machine {
    /// The machine and the load averages before and after a run, for the JSON results.
    pub fn to_json(&self, load: [&str; 2]) -> Json {
        Json::Obj(vec![
            ("nproc", Json::Int(self.nproc as u64)),
            ("cpu", Json::str(self.cpu.clone())),
            ("memory", Json::str(self.memory.clone())),
            ("kernel", Json::str(self.kernel.clone())),
            ("os", Json::str(self.os.clone())),
            ("load_average_before", Json::str(load[0])),
            ("load_average_after", Json::str(load[1])),
        ])
    }

    pub fn describe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = read("/proc/meminfo");
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "unknown".into());
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| "unknown".into());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu,
            kernel: if kernel.is_empty() {
                "unknown".into()
            } else {
                kernel
            },
            os,
            memory,
        }
    }
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`): other work on the machine skews
/// the numbers, so they are printed with them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A JSON value, written by hand.
pub enum Json {
    Null,
    Bool(bool),
    Int(u64),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    pub fn opt_ms(d: Option<Duration>) -> Json {
        d.map_or(Json::Null, |d| Json::Num(ms(d)))
    }

    pub fn opt_num(x: Option<f64>) -> Json {
        x.map_or(Json::Null, Json::Num)
    }

    pub fn tally(t: &BTreeMap<String, usize>) -> Json {
        Json::Arr(
            t.iter()
                .map(|(k, v)| {
                    Json::Obj(vec![
                        ("value", Json::str(k.clone())),
                        ("count", Json::Int(*v as u64)),
                    ])
                })
                .collect(),
        )
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::Num(x) if x.is_finite() => {
                // Milliseconds to the microsecond are plenty.
                let _ = write!(out, "{}", (x * 1000.0).round() / 1000.0);
            }
            Json::Num(_) => out.push_str("null"),
            Json::Str(s) => escape(out, s),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Arr(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    item.write(out, indent + 2);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Json::Obj(fields) => {
                out.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    pad(out, indent + 2);
                    escape(out, k);
                    out.push_str(": ");
                    v.write(out, indent + 2);
                    out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

fn escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(5));
        assert_eq!(percentile(&v, 0.9), Duration::from_millis(9));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(10));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn json_escapes() {
        let j = Json::Obj(vec![(
            "a\"b",
            Json::Arr(vec![Json::Int(1), Json::str("x\ny")]),
        )]);
        assert_eq!(
            j.render(),
            "{\n  \"a\\\"b\": [\n    1,\n    \"x\\ny\"\n  ]\n}\n"
        );
    }
}
