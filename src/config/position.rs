//! YAML positions: the dotted field path of a line (`cache.max_size`, `origins[1].url`), found
//! from indentation, so every error can name the field as well as its line and column.

/// serde-saphyr prefixes "line L column C: "; we print the position ourselves.
pub(super) fn strip_location_prefix(message: &str) -> String {
    let mut m = message.trim();
    if let Some(idx) = m.rfind(" at line ")
        && m[idx..].contains("column")
    {
        m = &m[..idx];
    }
    if let Some(rest) = m.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
        && rest[..idx].contains("column")
    {
        return rest[idx + 2..].to_owned();
    }
    m.to_owned()
}

/// The dotted path of the YAML key on `line` (1-based), found from indentation:
/// e.g. `cache.max_size` or `origins[1].url`.
pub fn field_path_at(text: &str, line: u64) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(idx) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1)) else {
        return String::new();
    };
    let Some(target) = lines.get(idx).and_then(|l| yaml_line(l)) else {
        return String::new();
    };
    // Parts are collected innermost first. `col` is the column of the element being located.
    let mut parts: Vec<String> = Vec::new();
    let mut col = match target {
        YamlLine {
            dash: Some(d), key, ..
        } => {
            if let Some(key) = key {
                parts.push(key.to_owned());
            }
            parts.push(format!("[{}]", list_index(&lines, idx, d)));
            d
        }
        YamlLine {
            key: Some(key),
            key_col,
            ..
        } => {
            parts.push(key.to_owned());
            key_col
        }
        _ => return String::new(),
    };
    for i in (0..idx).rev() {
        if col == 0 {
            break;
        }
        let Some(l) = yaml_line(lines[i]) else {
            continue;
        };
        if l.key.is_some() && l.key_col < col {
            parts.push(l.key.unwrap_or_default().to_owned());
            col = l.key_col;
        }
        if let Some(d) = l.dash
            && d < col
        {
            parts.push(format!("[{}]", list_index(&lines, i, d)));
            col = d;
        }
    }
    let mut out = String::new();
    for part in parts.iter().rev() {
        if !part.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

/// One non-blank, non-comment line: where its list dash and its key (if any) stand.
struct YamlLine<'a> {
    dash: Option<usize>,
    key: Option<&'a str>,
    key_col: usize,
}

fn yaml_line(raw: &str) -> Option<YamlLine<'_>> {
    let trimmed = raw.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let indent = raw.len() - trimmed.len();
    let (dash, body, key_col) = match trimmed.strip_prefix('-') {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
            let body = rest.trim_start();
            (Some(indent), body, raw.len() - body.len())
        }
        _ => (None, trimmed, indent),
    };
    Some(YamlLine {
        dash,
        key: yaml_key(body),
        key_col,
    })
}

fn yaml_key(body: &str) -> Option<&str> {
    let end = body.find(':')?;
    let key = body[..end].trim().trim_matches('"').trim_matches('\'');
    let after = &body[end + 1..];
    let valid = !key.is_empty()
        && (after.is_empty() || after.starts_with(' '))
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then_some(key)
}

/// Which item of the list the `- ` at line `at` (indent `indent`) is.
fn list_index(lines: &[&str], at: usize, indent: usize) -> usize {
    let mut n = 0;
    for raw in lines[..at].iter().rev() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let ind = raw.len() - trimmed.len();
        if ind < indent {
            break;
        }
        if ind == indent {
            if trimmed.starts_with("- ") || trimmed == "-" {
                n += 1;
            } else {
                break;
            }
        }
    }
    n
}
