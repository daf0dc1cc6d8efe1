//! The interfaces the dataplane is attached to, kept in step with the namespace. `--iface`
//! takes names and patterns (`*` any run of characters, `?` one: `lxc*`, `cali*`, `veth*`):
//! the daemon attaches to every interface that one names or matches, at start and again at
//! each link notification from the kernel (and at each registry poll, should one be missed),
//! so that a workload whose interface appears later, or comes back under the same name (a
//! restarted pod), is classified from then on. An interface that goes takes its links' pins
//! with it. Interfaces are known by name and index: a name that comes back with another index
//! is another device, whose pinned link from before (it outlives its device) is replaced.

use std::collections::BTreeMap;

/// Whether `spec` is a pattern rather than a name.
pub fn is_pattern(spec: &str) -> bool {
    spec.contains(['*', '?'])
}

/// Whether `name` matches `pattern` (`*`: any run of characters, `?`: one character).
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    // Where the last `*` was, and where in `name` it started matching.
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == '?' || c == n[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                // Let the last `*` take one more character.
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The interfaces of `links` (name, index) that `specs` name or match, by name.
pub fn wanted(specs: &[String], links: &[(String, u32)]) -> BTreeMap<String, u32> {
    links
        .iter()
        .filter(|(name, _)| {
            specs.iter().any(|s| {
                if is_pattern(s) {
                    glob(s, name)
                } else {
                    s == name
                }
            })
        })
        .cloned()
        .collect()
}

/// What keeps the attachments in step: the interfaces to attach to (new, or back with another
/// index), and those gone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub attach: Vec<(String, u32)>,
    pub gone: Vec<String>,
}

/// The changes from `known` (attached: name to index) to `now` (wanted).
pub fn changes(known: &BTreeMap<String, u32>, now: &BTreeMap<String, u32>) -> Changes {
    Changes {
        attach: now
            .iter()
            .filter(|(name, index)| known.get(*name) != Some(index))
            .map(|(n, i)| (n.clone(), *i))
            .collect(),
        gone: known
            .keys()
            .filter(|name| !now.contains_key(*name))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_a_shell_does() {
        for (p, n, m) in [
            ("lxc*", "lxc12ab", true),
            ("lxc*", "lxc", true),
            ("lxc*", "xlxc1", false),
            ("cali*", "cali0123456789a", true),
            ("veth?", "veth1", true),
            ("veth?", "veth12", false),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*bc", "abcbc", true),
            ("*x", "xyx", true),
            ("*x", "xy", false),
            ("eth0", "eth0", true),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(glob(p, n), m, "{p} ~ {n}");
        }
    }

    #[test]
    fn names_and_patterns_pick_interfaces() {
        let links: Vec<(String, u32)> = [("lo", 1), ("eth0", 2), ("lxc1", 7), ("lxc2", 8)]
            .iter()
            .map(|(n, i)| (n.to_string(), *i))
            .collect();
        let w = wanted(&["lxc*".into(), "eth0".into(), "eth1".into()], &links);
        assert_eq!(
            w.into_iter().collect::<Vec<_>>(),
            vec![("eth0".into(), 2), ("lxc1".into(), 7), ("lxc2".into(), 8)]
        );
        // A name is a name: `lx?1` would match `lxc1`, `lx` does not.
        assert!(wanted(&["lx".into()], &links).is_empty());
    }

    #[test]
    fn a_name_back_with_another_index_is_attached_again() {
        let map = |v: &[(&str, u32)]| -> BTreeMap<String, u32> {
            v.iter().map(|(n, i)| (n.to_string(), *i)).collect()
        };
        let known = map(&[("a", 1), ("b", 2), ("c", 3)]);
        let now = map(&[("a", 1), ("b", 9), ("d", 4)]);
        assert_eq!(
            changes(&known, &now),
            Changes {
                attach: vec![("b".into(), 9), ("d".into(), 4)],
                gone: vec!["c".into()],
            }
        );
        assert_eq!(changes(&now, &now), Changes::default());
    }
}
