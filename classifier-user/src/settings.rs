//! Dataplane settings that are not part of the registry: the outbound policy and what blocked
//! and redirected traffic becomes.

use std::{fmt, str::FromStr};

use classifier_common::{config_flags, policy, verdict, Config, Layout};
use serde::{Deserialize, Serialize};

/// Istio's `outboundTrafficPolicy.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundPolicy {
    /// Unknown destinations pass (Istio's default).
    #[default]
    AllowAny,
    /// Unknown destinations are blocked.
    RegistryOnly,
}

impl FromStr for OutboundPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "ALLOW_ANY" | "ALLOWANY" => Ok(Self::AllowAny),
            "REGISTRY_ONLY" | "REGISTRYONLY" => Ok(Self::RegistryOnly),
            _ => Err(format!(
                "`{s}` is not an outbound policy (ALLOW_ANY or REGISTRY_ONLY)"
            )),
        }
    }
}

impl fmt::Display for OutboundPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AllowAny => "ALLOW_ANY",
            Self::RegistryOnly => "REGISTRY_ONLY",
        })
    }
}

/// What happens to blocked traffic under REGISTRY_ONLY.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Blocked {
    /// Dropped silently: the client waits for its timeout.
    Drop,
    /// Rejected: TCP RST or ICMP port unreachable to the client, at once.
    #[default]
    Reject,
}

impl FromStr for Blocked {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "drop" => Ok(Self::Drop),
            "reject" => Ok(Self::Reject),
            _ => Err(format!("`{s}` is not a blocked action (drop or reject)")),
        }
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Drop => "drop",
            Self::Reject => "reject",
        })
    }
}

/// Default port of the node proxy's transparent listener (Istio's outbound capture port).
pub const DEFAULT_PROXY_PORT: u16 = 15001;
/// Default mark on redirected packets.
pub const DEFAULT_PROXY_MARK: u32 = 0x4d43; // "MC"

/// Settings of the dataplane beside the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub outbound_policy: OutboundPolicy,
    pub blocked: Blocked,
    pub proxy_port: u16,
    pub proxy_mark: u32,
    /// Emit a decision event for every new connection, not only blocked ones.
    pub events_all: bool,
    /// Match Encrypted Client Hello connections by their outer (public) SNI.
    pub ech_outer_sni: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            outbound_policy: OutboundPolicy::AllowAny,
            blocked: Blocked::Reject,
            proxy_port: DEFAULT_PROXY_PORT,
            proxy_mark: DEFAULT_PROXY_MARK,
            events_all: false,
            ech_outer_sni: false,
        }
    }
}

impl Settings {
    /// The kernel's view of these settings, with the clock of layout stamp `layout`.
    pub fn to_config(&self, layout: &Layout) -> Config {
        let mut flags = 0;
        if self.events_all {
            flags |= config_flags::EVENTS_ALL;
        }
        if self.ech_outer_sni {
            flags |= config_flags::ECH_OUTER_SNI;
        }
        Config {
            outbound_policy: match self.outbound_policy {
                OutboundPolicy::AllowAny => policy::ALLOW_ANY,
                OutboundPolicy::RegistryOnly => policy::REGISTRY_ONLY,
            },
            blocked_verdict: match self.blocked {
                Blocked::Drop => verdict::DROP,
                Blocked::Reject => verdict::REJECT,
            },
            proxy_port: self.proxy_port.to_be(),
            proxy_mark: self.proxy_mark,
            flags,
            proxy_addr4: [0; 4],
            proxy_addr6: [0; 16],
            tick_ns: layout.tick_ns,
            clock_base: layout.clock_base,
        }
    }

    /// The settings a kernel config holds: [`Self::to_config`] read back (what `inspect`
    /// says is enforced).
    pub fn from_config(c: &Config) -> Self {
        Self {
            outbound_policy: if c.outbound_policy == policy::REGISTRY_ONLY {
                OutboundPolicy::RegistryOnly
            } else {
                OutboundPolicy::AllowAny
            },
            blocked: if c.blocked_verdict == verdict::DROP {
                Blocked::Drop
            } else {
                Blocked::Reject
            },
            proxy_port: u16::from_be(c.proxy_port),
            proxy_mark: c.proxy_mark,
            events_all: c.flags & config_flags::EVENTS_ALL != 0,
            ech_outer_sni: c.flags & config_flags::ECH_OUTER_SNI != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_spellings_of_the_policy_parse_in_any_case() {
        assert_eq!("registry_only".parse(), Ok(OutboundPolicy::RegistryOnly));
        assert_eq!("REGISTRY_ONLY".parse(), Ok(OutboundPolicy::RegistryOnly));
        assert_eq!("Allow_Any".parse(), Ok(OutboundPolicy::AllowAny));
        assert!("deny".parse::<OutboundPolicy>().is_err());
    }

    #[test]
    fn a_config_reads_back_as_the_settings_it_was_made_of() {
        let layout = Layout::default();
        for s in [
            Settings::default(),
            Settings {
                outbound_policy: OutboundPolicy::RegistryOnly,
                blocked: Blocked::Drop,
                proxy_port: 15006,
                proxy_mark: 0x1234,
                events_all: true,
                ech_outer_sni: true,
            },
        ] {
            assert_eq!(Settings::from_config(&s.to_config(&layout)), s);
        }
    }
}
