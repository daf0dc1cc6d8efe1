//! Network configuration through rtnetlink: links, addresses, routes and the fwmark rule that
//! delivers redirected packets to the local proxy.
//!
//! Every call acts on the network namespace of the calling thread.

use std::net::IpAddr;

use futures_util::TryStreamExt as _;
use rtnetlink::{
    packet_route::{
        link::{LinkAttribute, LinkMessage},
        route::{RouteScope, RouteType},
        rule::RuleAction,
    },
    Handle, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

/// Errors of the netlink helpers.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("no interface named `{0}`")]
    NoSuchLink(String),
    #[error("netlink: {what}: {source}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// A netlink connection bound to the calling thread's network namespace.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection; its background task runs on the current tokio runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    async fn link(&self, name: &str) -> Result<LinkMessage, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(l)) => Ok(l),
            Ok(None) => Err(NetlinkError::NoSuchLink(name.to_string())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                Err(NetlinkError::NoSuchLink(name.to_string()))
            }
            Err(e) => Err(req(format!("looking up {name}"))(e)),
        }
    }

    /// The interface index of `name`.
    pub async fn link_index(&self, name: &str) -> Result<u32, NetlinkError> {
        Ok(self.link(name).await?.header.index)
    }

    /// The hardware address of `name`.
    pub async fn link_mac(&self, name: &str) -> Result<Vec<u8>, NetlinkError> {
        let l = self.link(name).await?;
        Ok(l.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_default())
    }

    /// Every interface of this namespace: its name and index.
    pub async fn links(&self) -> Result<Vec<(String, u32)>, NetlinkError> {
        let mut dump = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(l) = dump.try_next().await.map_err(req("listing interfaces"))? {
            let name = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let Some(name) = name {
                out.push((name, l.header.index));
            }
        }
        Ok(out)
    }

    /// Renames interface `name` to `new` (down while it is renamed, as the kernel requires, and
    /// up again).
    pub async fn rename(&self, name: &str, new: &str) -> Result<(), NetlinkError> {
        let index = self.link_index(name).await?;
        for (what, msg) in [
            ("down", LinkUnspec::new_with_index(index).down().build()),
            (
                "renamed",
                LinkUnspec::new_with_index(index).name(new).build(),
            ),
            ("up", LinkUnspec::new_with_index(index).up().build()),
        ] {
            self.handle
                .link()
                .set(msg)
                .execute()
                .await
                .map_err(req(format!("setting {name} {what}")))?;
        }
        Ok(())
    }

    /// Removes interface `name` (a veth takes its peer with it).
    pub async fn del_link(&self, name: &str) -> Result<(), NetlinkError> {
        let index = self.link_index(name).await?;
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(req(format!("removing {name}")))
    }

    /// Creates a veth pair `name` <-> `peer` in this namespace.
    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(req(format!("creating veth {name}/{peer}")))
    }

    /// Moves interface `name` into the namespace open at `ns_fd`.
    pub async fn move_to_netns(&self, name: &str, ns_fd: i32) -> Result<(), NetlinkError> {
        let index = self.link_index(name).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).setns_by_fd(ns_fd).build())
            .execute()
            .await
            .map_err(req(format!("moving {name} to another namespace")))
    }

    /// Brings interface `name` up.
    pub async fn set_up(&self, name: &str) -> Result<(), NetlinkError> {
        let index = self.link_index(name).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(req(format!("setting {name} up")))
    }

    /// Adds `addr/prefix` to interface `name`.
    pub async fn add_address(
        &self,
        name: &str,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let index = self.link_index(name).await?;
        self.handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
            .map_err(req(format!("adding {addr}/{prefix} to {name}")))
    }

    /// Adds a route to `dst/prefix` through `gateway` (or straight out of `dev` without one).
    pub async fn add_route(
        &self,
        dst: IpAddr,
        prefix: u8,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
    ) -> Result<(), NetlinkError> {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst, prefix)
            .map_err(|e| NetlinkError::Request {
                what: format!("route to {dst}/{prefix}: {e}"),
                source: rtnetlink::Error::RequestFailed,
            })?;
        if let Some(gw) = gateway {
            b = b.gateway(gw).map_err(|e| NetlinkError::Request {
                what: format!("route via {gw}: {e}"),
                source: rtnetlink::Error::RequestFailed,
            })?;
        }
        if let Some(dev) = dev {
            b = b.output_interface(self.link_index(dev).await?);
        }
        self.handle
            .route()
            .add(b.build())
            .execute()
            .await
            .map_err(req(format!("adding route to {dst}/{prefix}")))
    }

    /// Adds a permanent neighbour entry (no ARP/ND needed for `addr` on `dev`).
    pub async fn add_neighbour(
        &self,
        dev: &str,
        addr: IpAddr,
        mac: &[u8],
    ) -> Result<(), NetlinkError> {
        let index = self.link_index(dev).await?;
        self.handle
            .neighbours()
            .add(index, addr)
            .link_layer_address(mac)
            .state(rtnetlink::packet_route::neighbour::NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(req(format!("adding neighbour {addr} on {dev}")))
    }

    /// Installs `ip rule fwmark MARK lookup TABLE` and `local default dev lo table TABLE` for
    /// one family, so that packets the classifier marked are delivered to local sockets.
    pub async fn install_redirect_routing(
        &self,
        mark: u32,
        table: u32,
        v6: bool,
    ) -> Result<(), NetlinkError> {
        // The kernel's rules have no key: an add, even with NLM_F_REPLACE, puts one more copy
        // beside an equal rule (every restart of the daemon did). Add it only when missing.
        if self.fwmark_rules(mark, table, v6).await?.is_empty() {
            self.add_fwmark_rule(mark, table, v6).await?;
        }
        self.install_local_route(table, v6).await
    }

    /// `ip rule fwmark MARK lookup TABLE`, priority TABLE, for one family.
    async fn add_fwmark_rule(&self, mark: u32, table: u32, v6: bool) -> Result<(), NetlinkError> {
        let rule = self
            .handle
            .rule()
            .add()
            .fw_mark(mark)
            .table_id(table)
            .priority(table)
            .action(RuleAction::ToTable);
        let r = if v6 {
            rule.v6().replace().execute().await
        } else {
            rule.v4().replace().execute().await
        };
        ignore_exists(r).map_err(req(format!("adding fwmark {mark:#x} rule")))
    }

    /// `local default dev lo table TABLE` for one family.
    async fn install_local_route(&self, table: u32, v6: bool) -> Result<(), NetlinkError> {
        let lo = self.link_index("lo").await?;
        let any: IpAddr = if v6 {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        let route = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(any, 0)
            .map_err(|e| NetlinkError::Request {
                what: format!("local route: {e}"),
                source: rtnetlink::Error::RequestFailed,
            })?
            .output_interface(lo)
            .table_id(table)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .build();
        let r = self.handle.route().add(route).replace().execute().await;
        ignore_exists(r).map_err(req(format!("adding local route table {table}")))
    }

    /// The family's rules that send fwmark `mark` to table `table` at priority `table`, as
    /// [`Self::install_redirect_routing`] adds them (the kernel reports every rule's table as
    /// an attribute, whatever its number); an administrator's rule of another priority is not
    /// one of them.
    async fn fwmark_rules(
        &self,
        mark: u32,
        table: u32,
        v6: bool,
    ) -> Result<Vec<rtnetlink::packet_route::rule::RuleMessage>, NetlinkError> {
        use rtnetlink::packet_route::rule::RuleAttribute;
        let version = if v6 {
            rtnetlink::IpVersion::V6
        } else {
            rtnetlink::IpVersion::V4
        };
        let rules: Vec<_> = self
            .handle
            .rule()
            .get(version)
            .execute()
            .try_collect()
            .await
            .map_err(req("listing rules"))?;
        Ok(rules
            .into_iter()
            .filter(|r| {
                let has = |f: &dyn Fn(&RuleAttribute) -> bool| r.attributes.iter().any(f);
                has(&|a| matches!(a, RuleAttribute::FwMark(m) if *m == mark))
                    && has(&|a| matches!(a, RuleAttribute::Table(t) if *t == table))
                    && has(&|a| matches!(a, RuleAttribute::Priority(p) if *p == table))
            })
            .collect())
    }

    /// Removes what [`Self::install_redirect_routing`] installed; missing pieces are fine.
    pub async fn remove_redirect_routing(
        &self,
        mark: u32,
        table: u32,
        v6: bool,
    ) -> Result<(), NetlinkError> {
        for r in self.fwmark_rules(mark, table, v6).await? {
            self.handle
                .rule()
                .del(r)
                .execute()
                .await
                .map_err(req("deleting fwmark rule"))?;
        }
        let routes: Vec<_> = self
            .handle
            .route()
            .get(if v6 {
                RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .table_id(table)
                    .build()
            } else {
                RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .table_id(table)
                    .build()
            })
            .execute()
            .try_collect()
            .await
            .map_err(req("listing routes"))?;
        for r in routes {
            let in_table = r.attributes.iter().any(|a| {
                matches!(a, rtnetlink::packet_route::route::RouteAttribute::Table(t) if *t == table)
            }) || u32::from(r.header.table) == table;
            if in_table && r.header.kind == RouteType::Local {
                let _ = self.handle.route().del(r).execute().await;
            }
        }
        Ok(())
    }
}

fn ignore_exists(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
        other => other,
    }
}

/// The kernel's link notifications (interfaces appearing, changing, going) in the namespace of
/// the thread that made it: `next` returns at each one.
pub struct LinkChanges {
    messages: std::pin::Pin<Box<dyn futures_util::Stream<Item = ()> + Send>>,
    // The connection runs while a handle to it lives.
    _handle: Handle,
}

impl LinkChanges {
    /// Subscribes to link notifications; the connection's task runs on the current tokio
    /// runtime.
    pub fn subscribe() -> Result<Self, NetlinkError> {
        let (mut conn, handle, messages) =
            rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        let groups = rtnetlink::sys::SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK);
        use rtnetlink::sys::AsyncSocket as _;
        conn.socket_mut()
            .socket_mut()
            .bind(&groups)
            .map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        use futures_util::StreamExt as _;
        Ok(Self {
            messages: Box::pin(messages.map(|_| ())),
            _handle: handle,
        })
    }

    /// The next notification, with those that came meanwhile (one look serves them all);
    /// `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<()> {
        use futures_util::{FutureExt as _, StreamExt as _};
        self.messages.next().await?;
        while let Some(Some(())) = self.messages.next().now_or_never() {}
        Some(())
    }
}
