//! Purges the disk tier must remember: the index holds hashes, not keys, so a purge by target
//! or prefix cannot find its files at once. Each purge is kept as a rule with its time, in
//! memory and in an append-only log beside the files; a file written before a rule that
//! matches its key is purged (hard) or served only after revalidation (soft) when it is
//! next read. The start-up scan reads every file's key, applies the rules, and then forgets
//! those older than the scan.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cache::StoreKey;

/// The newest hard and soft purge of one pattern, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Mark {
    pub hard: u64,
    pub soft: u64,
}

impl Mark {
    fn record(&mut self, at: u64, soft: bool) {
        let slot = if soft { &mut self.soft } else { &mut self.hard };
        *slot = (*slot).max(at);
    }

    fn join(self, other: Mark) -> Mark {
        Mark {
            hard: self.hard.max(other.hard),
            soft: self.soft.max(other.soft),
        }
    }
}

/// What a purge matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern<'a> {
    /// One key, host included (and every variant and slice of it).
    Key(&'a str),
    /// One target under every host.
    Target(&'a str),
    /// Every target starting with this.
    Prefix(&'a str),
}

impl Pattern<'_> {
    /// The pattern's kind and text, to carry to another thread.
    pub fn owned(&self) -> (u8, String) {
        match self {
            Pattern::Key(k) => (0, (*k).to_owned()),
            Pattern::Target(t) => (1, (*t).to_owned()),
            Pattern::Prefix(p) => (2, (*p).to_owned()),
        }
    }

    pub fn of(kind: u8, text: &str) -> Pattern<'_> {
        match kind {
            0 => Pattern::Key(text),
            1 => Pattern::Target(text),
            _ => Pattern::Prefix(text),
        }
    }
}

/// What applies to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Keep,
    Stale,
    Purged,
}

#[derive(Default)]
pub(super) struct Rules {
    keys: HashMap<String, Mark>,
    targets: HashMap<String, Mark>,
    prefixes: Vec<(String, Mark)>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.targets.is_empty() && self.prefixes.is_empty()
    }

    pub fn add(&mut self, pattern: Pattern<'_>, at: u64, soft: bool) {
        match pattern {
            Pattern::Key(k) => self.keys.entry(k.to_owned()).or_default().record(at, soft),
            Pattern::Target(t) => self
                .targets
                .entry(t.to_owned())
                .or_default()
                .record(at, soft),
            Pattern::Prefix(p) => match self.prefixes.iter_mut().find(|(q, _)| q == p) {
                Some((_, m)) => m.record(at, soft),
                None => {
                    let mut m = Mark::default();
                    m.record(at, soft);
                    self.prefixes.push((p.to_owned(), m));
                }
            },
        }
    }

    /// What the rules say of a file of `slot` written at `written_ms`.
    pub fn verdict(&self, slot: &StoreKey, written_ms: u64) -> Verdict {
        if self.is_empty() {
            return Verdict::Keep;
        }
        let target = slot.key.as_str();
        let mut m = Mark::default();
        if let Some(k) = self.keys.get(slot.key.as_repr()) {
            m = m.join(*k);
        }
        if let Some(t) = self.targets.get(target) {
            m = m.join(*t);
        }
        for (p, pm) in &self.prefixes {
            if target.starts_with(p.as_str()) {
                m = m.join(*pm);
            }
        }
        // A file written in the same millisecond as a purge counts as older: the purge wins.
        if m.hard != 0 && m.hard >= written_ms {
            Verdict::Purged
        } else if m.soft != 0 && m.soft >= written_ms {
            Verdict::Stale
        } else {
            Verdict::Keep
        }
    }

    /// Forgets rules older than `before` (the start-up scan applied them to every file).
    pub fn forget_before(&mut self, before: u64) {
        let keep = |m: &mut Mark| {
            if m.hard < before {
                m.hard = 0;
            }
            if m.soft < before {
                m.soft = 0;
            }
            m.hard != 0 || m.soft != 0
        };
        self.keys.retain(|_, m| keep(m));
        self.targets.retain(|_, m| keep(m));
        self.prefixes.retain_mut(|(_, m)| keep(m));
    }

    fn lines(&self) -> String {
        let mut out = String::new();
        let mut put = |kind: &str, s: &str, m: &Mark| {
            for (at, how) in [(m.hard, "hard"), (m.soft, "soft")] {
                if at != 0 {
                    out.push_str(&format!("{at} {how} {kind} {s}\n"));
                }
            }
        };
        for (k, m) in &self.keys {
            put("key", k, m);
        }
        for (t, m) in &self.targets {
            put("target", t, m);
        }
        for (p, m) in &self.prefixes {
            put("prefix", p, m);
        }
        out
    }
}

/// The log of purges beside the files: one line per purge, `<ms> <hard|soft> <key|target|prefix> <text>`.
pub(super) struct Log {
    path: PathBuf,
}

impl Log {
    pub fn new(root: &Path) -> Log {
        Log {
            path: root.join("purges.log"),
        }
    }

    /// Reads the log; lines that do not parse (a torn last line after a crash) are skipped.
    pub fn load(&self) -> std::io::Result<Rules> {
        let mut rules = Rules::default();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rules),
            Err(e) => return Err(e),
        };
        for line in text.lines() {
            let mut it = line.splitn(4, ' ');
            let (Some(at), Some(how), Some(kind), Some(s)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            let Ok(at) = at.parse::<u64>() else { continue };
            let soft = match how {
                "hard" => false,
                "soft" => true,
                _ => continue,
            };
            let pattern = match kind {
                "key" => Pattern::Key(s),
                "target" => Pattern::Target(s),
                "prefix" => Pattern::Prefix(s),
                _ => continue,
            };
            rules.add(pattern, at, soft);
        }
        Ok(rules)
    }

    /// Appends one purge and syncs it: a purge that returned survives a crash.
    pub fn append(&self, pattern: Pattern<'_>, at: u64, soft: bool) -> std::io::Result<()> {
        let (kind, s) = match pattern {
            Pattern::Key(k) => ("key", k),
            Pattern::Target(t) => ("target", t),
            Pattern::Prefix(p) => ("prefix", p),
        };
        let how = if soft { "soft" } else { "hard" };
        if s.chars().any(char::is_control) {
            // No key has one (keys are canonical): such a purge matches nothing, and its text
            // must not add lines of its own to the log.
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(format!("{at} {how} {kind} {s}\n").as_bytes())?;
        f.sync_data()
    }

    /// Replaces the log with what `rules` still hold (atomically, by rename).
    pub fn rewrite(&self, rules: &Rules) -> std::io::Result<()> {
        let tmp = self.path.with_extension("log.tmp");
        std::fs::write(&tmp, rules.lines())?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheKey;

    fn slot(target: &str) -> StoreKey {
        StoreKey::base(CacheKey::new(target, None))
    }

    #[test]
    fn a_purge_applies_only_to_files_written_before_it() {
        let mut r = Rules::default();
        r.add(Pattern::Prefix("/vod/"), 100, false);
        assert_eq!(r.verdict(&slot("/vod/a.ts"), 50), Verdict::Purged);
        assert_eq!(r.verdict(&slot("/vod/a.ts"), 150), Verdict::Keep);
        assert_eq!(r.verdict(&slot("/live/a.ts"), 50), Verdict::Keep);
        r.add(Pattern::Target("/live/a.ts"), 200, true);
        assert_eq!(r.verdict(&slot("/live/a.ts"), 150), Verdict::Stale);
        r.add(Pattern::Key("/live/a.ts"), 300, false);
        assert_eq!(r.verdict(&slot("/live/a.ts"), 250), Verdict::Purged);
    }

    #[test]
    fn the_log_round_trips_and_forgets_what_the_scan_applied() {
        let dir = std::env::temp_dir().join(format!("streamedge-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = Log::new(&dir);
        log.append(Pattern::Prefix("/a/"), 10, false).unwrap();
        log.append(Pattern::Key("h/b"), 20, true).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("purges.log"))
            .unwrap()
            .write_all(b"30 hard pre")
            .unwrap();
        let mut rules = log.load().unwrap();
        assert_eq!(rules.verdict(&slot("/a/x"), 5), Verdict::Purged);
        rules.forget_before(15);
        log.rewrite(&rules).unwrap();
        let rules = log.load().unwrap();
        assert_eq!(rules.verdict(&slot("/a/x"), 5), Verdict::Keep);
        assert_eq!(rules.prefixes.len(), 0);
        assert_eq!(rules.keys.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
