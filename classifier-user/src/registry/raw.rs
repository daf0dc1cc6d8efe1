//! Serde types that mirror the YAML of the resources, before any validation.
//!
//! Istio's specs reject unknown fields (`deny_unknown_fields`); Kubernetes objects and metadata
//! accept them, because `kubectl get -o yaml` adds many (status, managedFields, ...).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `metadata` of any object.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub creation_timestamp: Option<String>,
    /// Set while a Pod terminates: no longer an endpoint (Istio's `shouldPodBeInEndpoints`).
    pub deletion_timestamp: Option<String>,
}

/// `spec` of a ServiceEntry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawServiceEntrySpec {
    pub hosts: Option<Vec<String>>,
    pub addresses: Option<Vec<String>>,
    pub ports: Option<Vec<Option<RawServicePort>>>,
    pub location: Option<String>,
    pub resolution: Option<String>,
    pub endpoints: Option<Vec<Option<RawWorkloadEntrySpec>>>,
    pub workload_selector: Option<RawWorkloadSelector>,
    pub export_to: Option<Vec<String>>,
    pub subject_alt_names: Option<Vec<String>>,
}

/// One of `spec.ports` of a ServiceEntry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawServicePort {
    pub number: Option<u64>,
    pub protocol: Option<String>,
    pub name: Option<String>,
    pub target_port: Option<u64>,
}

/// `spec.workloadSelector` of a ServiceEntry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawWorkloadSelector {
    pub labels: Option<BTreeMap<String, String>>,
}

/// `spec` of a WorkloadEntry, also the shape of a ServiceEntry's inline endpoint.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawWorkloadEntrySpec {
    pub address: Option<String>,
    pub ports: Option<BTreeMap<String, u64>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub network: Option<String>,
    pub locality: Option<String>,
    pub weight: Option<u64>,
    pub service_account: Option<String>,
}

/// The parts of a core v1 Pod that the registry uses.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPod {
    pub spec: Option<RawPodSpec>,
    pub status: Option<RawPodStatus>,
}

/// `spec` of a Pod.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPodSpec {
    pub containers: Option<Vec<RawContainer>>,
}

/// A container of a Pod.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawContainer {
    pub ports: Option<Vec<RawContainerPort>>,
}

/// A container port.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawContainerPort {
    pub name: Option<String>,
    pub container_port: Option<u64>,
    pub protocol: Option<String>,
}

/// `status` of a Pod.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPodStatus {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<RawPodIp>>,
    pub conditions: Option<Vec<RawCondition>>,
    /// `Succeeded` and `Failed` pods are no endpoints, whatever their conditions say.
    pub phase: Option<String>,
}

/// One of `status.podIPs`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawPodIp {
    pub ip: Option<String>,
}

/// A status condition.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawCondition {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub status: Option<String>,
}

/// The parts of a core v1 Service that the registry uses.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawService {
    pub spec: Option<RawServiceSpec>,
}

/// `spec` of a Service.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawServiceSpec {
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    pub ports: Option<Vec<RawKubePort>>,
    /// The pods (and WorkloadEntries) that are its endpoints; none or empty: endpoints kept
    /// by someone else, unknown here.
    pub selector: Option<BTreeMap<String, String>>,
}

/// A Service port.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawKubePort {
    pub name: Option<String>,
    pub port: Option<u64>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
    pub target_port: Option<RawIntOrString>,
}

/// Kubernetes' `IntOrString`: a number, or a name (a container port's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawIntOrString {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for RawIntOrString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawIntOrString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number or name")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawIntOrString::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawIntOrString::Int(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawIntOrString::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}
