//! Cohort selectors over device tags, in the label-selector syntax operators know from
//! Kubernetes: comma-separated requirements, all of which must hold.
//!
//! ```text
//! hw=jetson-orin            tag equals
//! hw!=x86                   tag absent or different
//! site in (berlin,paris)    tag is one of
//! site notin (lab)          tag absent or none of
//! gpu                       tag present
//! !gpu                      tag absent
//! ```
//!
//! The empty selector matches every device.
//!
//! In JSON (the REST contract, stored rollouts) a selector is its text. Reading parses it: a
//! rollout whose selector does not parse is refused whole, never read as "every device" (fail
//! closed). The text is kept as the operator wrote it.

use std::collections::BTreeMap;
use std::fmt;

/// One requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `k=v` (also `k==v`).
    Equals(String, String),
    /// `k!=v`.
    NotEquals(String, String),
    /// `k in (a,b)`.
    In(String, Vec<String>),
    /// `k notin (a,b)`.
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    NotExists(String),
}

/// A parsed selector, with the text it was parsed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// All must hold.
    pub requirements: Vec<Requirement>,
    /// The text as written (what JSON shows).
    source: String,
}

/// Why a selector does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("selector '{input}': {reason}")]
pub struct SelectorError {
    /// The selector text.
    pub input: String,
    /// What is wrong.
    pub reason: String,
}

fn valid_word(w: &str) -> bool {
    !w.is_empty()
        && w.len() <= 63
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// Splits on commas that are not inside parentheses.
fn split_top(input: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&input[start..]);
    Ok(parts)
}

fn parse_set(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesized list, got '{}'", text.trim()))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if let Some(bad) = values.iter().find(|v| !valid_word(v)) {
        return Err(format!("'{bad}' is not a valid value"));
    }
    Ok(values)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let p = part.trim();
    if p.is_empty() {
        return Err("empty requirement (a stray comma?)".into());
    }
    let word = |w: &str| -> Result<String, String> {
        let w = w.trim();
        if valid_word(w) {
            Ok(w.to_string())
        } else {
            Err(format!(
                "'{w}' is not a valid key or value (letters, digits, - _ . /; at most 63)"
            ))
        }
    };
    if let Some((k, v)) = p.split_once("!=") {
        return Ok(Requirement::NotEquals(word(k)?, word(v)?));
    }
    if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
        return Ok(Requirement::Equals(word(k)?, word(v)?));
    }
    if let Some(k) = p.strip_prefix('!') {
        return Ok(Requirement::NotExists(word(k)?));
    }
    let mut it = p.splitn(2, char::is_whitespace);
    let key = it.next().unwrap_or_default();
    match it.next().map(str::trim_start) {
        None => Ok(Requirement::Exists(word(key)?)),
        Some(rest) => {
            if let Some(set) = rest.strip_prefix("notin") {
                Ok(Requirement::NotIn(word(key)?, parse_set(set)?))
            } else if let Some(set) = rest.strip_prefix("in") {
                Ok(Requirement::In(word(key)?, parse_set(set)?))
            } else {
                Err(format!(
                    "cannot read '{p}': expected k=v, k!=v, k in (..), k notin (..), k or !k"
                ))
            }
        }
    }
}

impl Selector {
    /// Parses a selector.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let err = |reason: String| SelectorError {
            input: input.to_string(),
            reason,
        };
        if input.trim().is_empty() {
            return Ok(Selector {
                requirements: Vec::new(),
                source: input.to_string(),
            });
        }
        let requirements = split_top(input)
            .map_err(err)?
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()
            .map_err(err)?;
        Ok(Selector {
            requirements,
            source: input.to_string(),
        })
    }

    /// The text this selector was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether a device with these tags is selected.
    pub fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => tags.get(k) == Some(v),
            Requirement::NotEquals(k, v) => tags.get(k) != Some(v),
            Requirement::In(k, vs) => tags.get(k).is_some_and(|t| vs.contains(t)),
            Requirement::NotIn(k, vs) => tags.get(k).is_none_or(|t| !vs.contains(t)),
            Requirement::Exists(k) => tags.contains_key(k),
            Requirement::NotExists(k) => !tags.contains_key(k),
        })
    }

    /// Whether some tag set could match both selectors (used to refuse two rollouts of one model
    /// over overlapping cohorts). Conservative: `true` unless a key is pinned to disjoint values
    /// or required present by one and absent by the other.
    pub fn may_overlap(&self, other: &Selector) -> bool {
        use Requirement::*;
        let allowed = |s: &Selector, key: &str| -> Option<Vec<String>> {
            let mut set: Option<Vec<String>> = None;
            for r in &s.requirements {
                let vals = match r {
                    Equals(k, v) if k == key => vec![v.clone()],
                    In(k, vs) if k == key => vs.clone(),
                    _ => continue,
                };
                set = Some(match set {
                    None => vals,
                    Some(prev) => prev.into_iter().filter(|v| vals.contains(v)).collect(),
                });
            }
            set
        };
        let excluded = |s: &Selector, key: &str| -> Vec<String> {
            s.requirements
                .iter()
                .flat_map(|r| match r {
                    NotEquals(k, v) if k == key => vec![v.clone()],
                    NotIn(k, vs) if k == key => vs.clone(),
                    _ => vec![],
                })
                .collect()
        };
        let keys: std::collections::BTreeSet<&str> = self
            .requirements
            .iter()
            .chain(&other.requirements)
            .map(|r| match r {
                Equals(k, _)
                | NotEquals(k, _)
                | In(k, _)
                | NotIn(k, _)
                | Exists(k)
                | NotExists(k) => k.as_str(),
            })
            .collect();
        for key in keys {
            let must_exist = |s: &Selector| {
                s.requirements.iter().any(|r| match r {
                    Equals(k, _) | In(k, _) | Exists(k) => k == key,
                    _ => false,
                })
            };
            let must_not_exist = |s: &Selector| {
                s.requirements
                    .iter()
                    .any(|r| matches!(r, NotExists(k) if k == key))
            };
            if (must_exist(self) && must_not_exist(other))
                || (must_exist(other) && must_not_exist(self))
            {
                return false;
            }
            match (allowed(self, key), allowed(other, key)) {
                (Some(a), Some(b)) => {
                    let ex: Vec<String> = excluded(self, key)
                        .into_iter()
                        .chain(excluded(other, key))
                        .collect();
                    if !a.iter().any(|v| b.contains(v) && !ex.contains(v)) {
                        return false;
                    }
                }
                (Some(a), None) => {
                    let ex = excluded(other, key);
                    if a.iter().all(|v| ex.contains(v)) {
                        return false;
                    }
                }
                (None, Some(b)) => {
                    let ex = excluded(self, key);
                    if b.iter().all(|v| ex.contains(v)) {
                        return false;
                    }
                }
                (None, None) => {}
            }
        }
        true
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Selector {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "Cohort selector over device tags, Kubernetes label-selector syntax: \
                 `k=v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-separated (all \
                 must hold); empty selects every device.",
            ))
            .examples(["hw=jetson-orin,site in (berlin,paris)"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Selector {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_issue_example_parses_and_matches() {
        let s = Selector::parse("hw=jetson-orin,site in (berlin,paris)").unwrap();
        assert!(s.matches(&tags(&[("hw", "jetson-orin"), ("site", "paris")])));
        assert!(!s.matches(&tags(&[("hw", "jetson-orin"), ("site", "rome")])));
        assert!(!s.matches(&tags(&[("site", "paris")])));
        assert_eq!(s.to_string(), "hw=jetson-orin,site in (berlin,paris)");
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn every_operator() {
        let t = tags(&[("hw", "x86"), ("gpu", "yes")]);
        for (sel, want) in [
            ("", true),
            ("hw!=arm", true),
            ("hw!=x86", false),
            ("hw notin (arm, riscv)", true),
            ("site notin (lab)", true),
            ("gpu", true),
            ("!gpu", false),
            ("!site", true),
            ("hw==x86", true),
        ] {
            assert_eq!(Selector::parse(sel).unwrap().matches(&t), want, "{sel}");
        }
    }

    #[test]
    fn bad_selectors_say_why() {
        for (sel, says) in [
            ("hw=", "not a valid"),
            ("site in berlin", "parenthesized"),
            ("site in (berlin", "unbalanced"),
            ("a=b,,c=d", "stray comma"),
            ("hw is x86", "cannot read"),
        ] {
            let e = Selector::parse(sel).unwrap_err();
            assert!(e.to_string().contains(says), "{sel}: {e}");
        }
    }

    #[test]
    fn overlap_is_refused_only_when_disjoint() {
        let p = |s: &str| Selector::parse(s).unwrap();
        assert!(p("hw=a").may_overlap(&p("site=b")));
        assert!(!p("hw=a").may_overlap(&p("hw=b")));
        assert!(!p("hw in (a,b)").may_overlap(&p("hw in (c)")));
        assert!(p("hw in (a,b)").may_overlap(&p("hw in (b,c)")));
        assert!(!p("hw=a").may_overlap(&p("hw!=a")));
        assert!(!p("gpu").may_overlap(&p("!gpu")));
        assert!(p("").may_overlap(&p("hw=a")));
    }
}
