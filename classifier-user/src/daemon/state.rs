//! What the daemon keeps beside the pins so that `inspect` can decode the maps while the
//! daemon is down: the applied plan and settings, interfaces, routing, the last error.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs, io,
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::{
    plan::{Plan, Verdict},
    settings::Settings,
};

/// The state file's contents.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The plan in force (its entry order gives the entry ids the writer reports).
    pub plan: Plan,
    /// Kernel entry id of each plan entry, same order as `plan.entries`.
    pub entry_ids: Vec<u32>,
    pub settings: Option<Settings>,
    /// Interfaces attached, with the mode used (`tcx` or `clsact`).
    pub interfaces: Vec<(String, String)>,
    /// fwmark rule and local route table installed for redirects.
    pub routing: Option<(u32, u32)>,
    /// The network namespace the daemon ran in (device and inode of `/proc/self/ns/net`),
    /// where its interfaces and routing are.
    #[serde(default)]
    pub netns: Option<(u64, u64)>,
    /// The registry paths being enforced.
    pub registry: Vec<String>,
    /// Unix time of the last applied registry.
    pub applied_at: u64,
    /// Reloads applied and refused since the daemon started.
    pub reloads: u64,
    pub reload_errors: u64,
    /// The last registry error, if the last reload was refused (the previous one stays).
    pub last_error: Option<String>,
    /// DNS resolutions done and failed since the daemon started.
    pub dns_resolutions: u64,
    pub dns_failures: u64,
    /// Generation in force.
    pub generation: u32,
    /// Hits of entries that left (removed, or given to another service or verdict), by the
    /// service and verdict they decided for: added to the live hits so that the metrics'
    /// counts by service never go down. Only labels of the plan in force are kept.
    #[serde(default)]
    pub retired_hits: Vec<RetiredHits>,
    /// Applies recorded in this state (the kernel counts them too, modulo 256, in every flow
    /// entry's registry epoch).
    #[serde(default)]
    pub applies: u64,
    /// The apply (its count in `applies`) from which the services have had the ids they have
    /// in `plan`; `None`: since before any flow the maps hold.
    #[serde(default)]
    pub services_since: Option<u64>,
    /// The services' keys by id as they were before that, and the apply they had been since:
    /// the labels of flows decided then (a reload that adds a service ahead of others renumbers
    /// them).
    #[serde(default)]
    pub previous_services: Option<(Option<u64>, Vec<String>)>,
    /// Interfaces that `--iface` names or matches but that could not be attached (tried again
    /// at each look): their workloads' traffic is not classified.
    #[serde(default)]
    pub unattached: Vec<String>,
    /// Attaches that failed (each interface and index counted once in a run of the daemon;
    /// kept across runs, as the reload counts are).
    #[serde(default)]
    pub attach_failures: u64,
}

/// Hits of entries gone from the plan, for one (service, verdict).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredHits {
    /// `namespace/name/host`.
    pub service: String,
    pub verdict: Verdict,
    pub hits: u64,
}

impl State {
    /// Reads the state file; a missing file is an empty state.
    pub fn read(path: &Path) -> io::Result<Self> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Whether each plan entry is shadowed: an earlier entry with the same match holds its
    /// slot (the two share an entry id), so it decides nothing.
    pub fn shadowed(&self) -> Vec<bool> {
        let deciding = self.deciding();
        self.entry_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| deciding[id as usize] != i)
            .collect()
    }

    /// By entry id, the plan entry that decides for it: the first with that id (`usize::MAX`
    /// for an id no entry has).
    fn deciding(&self) -> Vec<usize> {
        let ids = self.entry_ids.iter().max().map_or(0, |m| *m as usize + 1);
        let mut first = vec![usize::MAX; ids];
        for (i, &id) in self.entry_ids.iter().enumerate() {
            if first[id as usize] == usize::MAX {
                first[id as usize] = i;
            }
        }
        first
    }

    /// The hits of each plan entry, from the hits of every entry id (`Dataplane::entry_hits`);
    /// a shadowed entry is credited 0.
    pub fn entry_hits(&self, hits: &[u64]) -> Vec<u64> {
        self.entry_ids
            .iter()
            .zip(self.shadowed())
            .map(|(&id, shadowed)| {
                if shadowed {
                    0
                } else {
                    hits.get(id as usize).copied().unwrap_or(0)
                }
            })
            .collect()
    }

    /// Hits by (service, verdict): the live entries' (`entry_hits`) plus the retired ones;
    /// only the pairs with hits (a metrics scrape of a large registry copies no name of an
    /// entry never hit).
    pub fn service_hits(&self, hits: &[u64]) -> BTreeMap<(String, Verdict), u64> {
        let mut sums: HashMap<(&str, Verdict), u64> = HashMap::new();
        for (e, n) in self.plan.entries.iter().zip(self.entry_hits(hits)) {
            if n > 0 {
                *sums.entry((e.service.as_str(), e.verdict)).or_default() += n;
            }
        }
        for r in &self.retired_hits {
            let t = sums.entry((r.service.as_str(), r.verdict)).or_default();
            *t = t.saturating_add(r.hits);
        }
        sums.into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((service, v), n)| ((service.to_string(), v), n))
            .collect()
    }

    /// Replaces the plan in force with `plan` (entry ids `entry_ids`), keeping the hits of the
    /// entries that leave: `retired` ((entry id, hits) in the plan being replaced, from
    /// `ApplyReport::retired`) goes to the service and verdict its id decided for. Retired
    /// hits of a (service, verdict) that `plan` no longer has are dropped with it. Counts the
    /// apply; when `plan` numbers its services otherwise, the current numbering becomes the
    /// previous one (`service_label`).
    pub fn replace_plan(&mut self, plan: Plan, entry_ids: Vec<u32>, retired: &[(u32, u64)]) {
        self.applies += 1;
        let renumbered = self.plan.services.len() != plan.services.len()
            || self
                .plan
                .services
                .iter()
                .zip(&plan.services)
                .any(|(a, b)| a.key() != b.key());
        if renumbered {
            let keys = self.plan.services.iter().map(|s| s.key()).collect();
            self.previous_services = Some((self.services_since, keys));
            self.services_since = Some(self.applies);
        }
        let mut totals: BTreeMap<(String, Verdict), u64> = self
            .retired_hits
            .drain(..)
            .map(|r| ((r.service, r.verdict), r.hits))
            .collect();
        if !retired.is_empty() {
            let owner = self.deciding();
            for &(id, n) in retired {
                let first = owner.get(id as usize).copied().unwrap_or(usize::MAX);
                if let Some(e) = self.plan.entries.get(first) {
                    let t = totals.entry((e.service.clone(), e.verdict)).or_default();
                    *t = t.saturating_add(n);
                }
            }
        }
        if !totals.is_empty() {
            let live: HashSet<(&str, Verdict)> = plan
                .entries
                .iter()
                .map(|e| (e.service.as_str(), e.verdict))
                .collect();
            totals.retain(|(service, verdict), hits| {
                *hits > 0 && live.contains(&(service.as_str(), *verdict))
            });
        }
        self.retired_hits = totals
            .into_iter()
            .map(|((service, verdict), hits)| RetiredHits {
                service,
                verdict,
                hits,
            })
            .collect();
        self.plan = plan;
        self.entry_ids = entry_ids;
    }

    /// Forgets the numberings of maps that are gone (a fresh dataplane holds no flow of theirs).
    pub fn forget_numberings(&mut self) {
        self.services_since = None;
        self.previous_services = None;
    }

    /// The label of service `id` for a flow decided in registry epoch `decided` while epoch
    /// `now` is in force (epochs count applies modulo 256): its key in the numbering of that
    /// time, or `#id` when that numbering is no longer known.
    pub fn service_label(&self, id: u32, decided: u8, now: u8) -> String {
        if id == classifier_common::NO_SERVICE {
            return "-".into();
        }
        // Applies since the decision (a flow older than 256 applies is taken for a younger
        // one); a numbering covers the flows decided since it began.
        let ago = u64::from(now.wrapping_sub(decided));
        let covers =
            |since: Option<u64>| since.is_none_or(|s| ago <= self.applies.saturating_sub(s));
        let name = if covers(self.services_since) {
            self.plan.services.get(id as usize).map(|s| s.key())
        } else {
            match &self.previous_services {
                Some((since, keys)) if covers(*since) => keys.get(id as usize).cloned(),
                _ => None,
            }
        };
        name.unwrap_or_else(|| format!("#{id}"))
    }

    /// Writes the state file atomically (write a temporary file, then rename).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec(self).map_err(io::Error::other)?)?;
        fs::rename(&tmp, path)
    }
}

/// This process's network namespace: the device and inode of `/proc/self/ns/net`.
pub fn current_netns() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = fs::metadata("/proc/self/ns/net").ok()?;
    Some((m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::plan::{Entry, Match, L4};

    fn entry(n: u8, service: &str, verdict: Verdict) -> Entry {
        Entry {
            matcher: Match::Ip {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
                port: 80,
                protocol: L4::Tcp,
            },
            service_id: 0,
            service: service.into(),
            verdict,
        }
    }

    fn plan(entries: Vec<Entry>) -> Plan {
        Plan {
            entries,
            ..Plan::default()
        }
    }

    fn by_service(s: &State, hits: &[u64]) -> Vec<(String, Verdict, u64)> {
        s.service_hits(hits)
            .into_iter()
            .map(|((service, v), n)| (service, v, n))
            .collect()
    }

    /// A flow is labelled with the service numbering of the registry it was decided under: a
    /// reload that adds a service before the others renumbers them, and the flows decided
    /// before keep their names; an apply that changes no service keeps the numbering.
    #[test]
    fn flows_are_labelled_by_the_numbering_they_were_decided_under() {
        let services = |names: &[&str]| Plan {
            services: names
                .iter()
                .enumerate()
                .map(|(i, n)| crate::plan::Service {
                    id: i as u32,
                    kind: crate::plan::ServiceKind::ServiceEntry,
                    namespace: "ns".into(),
                    name: n.to_string(),
                    host: format!("{n}.lab"),
                    location: crate::plan::Location::MeshExternal,
                    resolution: "STATIC".into(),
                    ports: vec![],
                    addresses: vec![],
                })
                .collect(),
            ..Plan::default()
        };
        // Applies and the kernel's epochs (their count modulo 256) alike.
        let put = |s: &mut State, p: Plan| {
            s.replace_plan(p, vec![], &[]);
            s.applies as u8
        };
        // A first plan: flows from before it (none, in fresh maps) are of no known numbering.
        let mut s = State::default();
        assert_eq!(put(&mut s, services(&["b", "c"])), 1);
        assert_eq!(s.service_label(1, 200, 1), "#1");
        // A state file from before the numberings were kept, its plan in force: that numbering
        // covers every flow the maps hold.
        let mut s = State {
            plan: services(&["b", "c"]),
            ..State::default()
        };
        assert_eq!(put(&mut s, services(&["b", "c"])), 1);
        assert_eq!(s.service_label(1, 200, 1), "ns/c/c.lab");
        assert_eq!(put(&mut s, services(&["b", "c"])), 2);
        assert_eq!(s.service_label(1, 1, 2), "ns/c/c.lab");
        assert_eq!(put(&mut s, services(&["a", "b", "c"])), 3);
        // Decided in epochs 1 and 2: the old numbering; in 3, the new one.
        assert_eq!(s.service_label(1, 1, 3), "ns/c/c.lab");
        assert_eq!(s.service_label(1, 2, 3), "ns/c/c.lab");
        assert_eq!(s.service_label(1, 3, 3), "ns/b/b.lab");
        assert_eq!(s.service_label(classifier_common::NO_SERVICE, 3, 3), "-");
        // 300 applies that keep the numbering: every flow is of the current one.
        for _ in 0..300 {
            put(&mut s, services(&["a", "b", "c"]));
        }
        let now = s.applies as u8;
        assert_eq!(s.service_label(1, now.wrapping_sub(40), now), "ns/b/b.lab");
        assert_eq!(s.service_label(1, now.wrapping_sub(255), now), "ns/b/b.lab");
        // A renumbering: flows before it, the previous numbering (which had covered 303 applies,
        // all of an epoch's range); two renumberings back, the id alone.
        let now = put(&mut s, services(&["a", "c"]));
        assert_eq!(s.service_label(1, now.wrapping_sub(1), now), "ns/b/b.lab");
        assert_eq!(s.service_label(1, now.wrapping_sub(200), now), "ns/b/b.lab");
        assert_eq!(s.service_label(1, now, now), "ns/c/c.lab");
        let now = put(&mut s, services(&["c"]));
        assert_eq!(s.service_label(0, now.wrapping_sub(1), now), "ns/a/a.lab");
        assert_eq!(s.service_label(0, now.wrapping_sub(2), now), "#0");
    }

    /// An entry shadowed by an earlier one (the same id) is credited no hit: the slot's hits
    /// count once, for the entry that decides.
    #[test]
    fn a_shadowed_entry_is_credited_no_hits() {
        let mut s = State::default();
        s.replace_plan(
            plan(vec![
                entry(1, "ns/a/a", Verdict::Pass),
                entry(1, "ns/b/b", Verdict::Pass),
                entry(2, "ns/a/a", Verdict::Pass),
            ]),
            vec![0, 0, 1],
            &[],
        );
        assert_eq!(s.shadowed(), [false, true, false]);
        assert_eq!(s.entry_hits(&[5, 7]), [5, 0, 7]);
        assert_eq!(
            by_service(&s, &[5, 7]),
            [("ns/a/a".into(), Verdict::Pass, 12)]
        );
    }

    /// Hits of entries that leave stay with the service and verdict they decided for, so that
    /// the counts by service never go down; they go when the plan has no such label left.
    #[test]
    fn retired_hits_keep_the_counts_by_service_from_going_down() {
        let mut s = State::default();
        s.replace_plan(
            plan(vec![
                entry(1, "ns/a/a", Verdict::Pass),
                entry(2, "ns/a/a", Verdict::Pass),
                entry(3, "ns/b/b", Verdict::Redirect),
            ]),
            vec![0, 1, 2],
            &[],
        );
        assert_eq!(
            by_service(&s, &[4, 6, 9]),
            [
                ("ns/a/a".into(), Verdict::Pass, 10),
                ("ns/b/b".into(), Verdict::Redirect, 9)
            ]
        );
        // 10.0.0.2 is removed (id 1, 6 hits); 10.0.0.3 goes to a (id 2 kept, its 9 hits reset).
        s.replace_plan(
            plan(vec![
                entry(1, "ns/a/a", Verdict::Pass),
                entry(3, "ns/a/a", Verdict::Pass),
                entry(4, "ns/b/b", Verdict::Redirect),
            ]),
            vec![0, 2, 3],
            &[(1, 6), (2, 9)],
        );
        // Live: id 0 has 4 + 1, id 2 has 2 since its reset, id 3 has 1.
        assert_eq!(
            by_service(&s, &[5, 0, 2, 1]),
            [
                ("ns/a/a".into(), Verdict::Pass, 5 + 6 + 2),
                ("ns/b/b".into(), Verdict::Redirect, 9 + 1)
            ]
        );
        // b's entry goes: so does its label, and its retired hits with it.
        s.replace_plan(plan(vec![entry(1, "ns/a/a", Verdict::Pass)]), vec![0], &[]);
        assert_eq!(
            s.retired_hits,
            [RetiredHits {
                service: "ns/a/a".into(),
                verdict: Verdict::Pass,
                hits: 6
            }]
        );
    }

    /// The retired hits survive the state file (a restarted daemon keeps them).
    #[test]
    fn retired_hits_survive_the_state_file() {
        let dir = std::env::temp_dir().join(format!("meshclass-state-{}", std::process::id()));
        let path = dir.join("state.json");
        let mut s = State::default();
        s.replace_plan(plan(vec![entry(1, "ns/a/a", Verdict::Pass)]), vec![0], &[]);
        s.retired_hits.push(RetiredHits {
            service: "ns/a/a".into(),
            verdict: Verdict::Pass,
            hits: 3,
        });
        s.write(&path).unwrap();
        let back = State::read(&path).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(back.retired_hits, s.retired_hits);
        assert_eq!(
            by_service(&back, &[2]),
            [("ns/a/a".into(), Verdict::Pass, 5)]
        );
    }
}
