//! The one egress policy: every outbound connection the control plane makes for a tenant — a git
//! fetch, a storage endpoint, an SSH server — is checked here, by address.
//!
//! A tenant names hosts; the control plane must not become its way into the control plane's own
//! machine or network (loopback services, the cloud's metadata endpoint, a private network).
//! Names are therefore resolved and **every** resolved address checked, and an address literal is
//! read the way the resolver would read it — `127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`, `0`,
//! `[::ffff:127.0.0.1]`, `localhost.` all name the loopback — so no spelling slips past. What is
//! refused: loopback, private (RFC 1918, unique-local), link-local (the metadata endpoint
//! `169.254.169.254` among them), shared address space (CGNAT, `100.64.0.0/10`), unspecified,
//! multicast, broadcast and reserved ranges, and the IPv4 forms embedded in IPv6 (mapped,
//! compatible, NAT64). The operator may allow named ranges (a lab network) with [`Network`]s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("{host} is {why}: the control plane does not connect there for a tenant")]
    Internal { host: String, why: &'static str },
    #[error("cannot resolve {host}: {reason}")]
    Unresolved { host: String, reason: String },
    #[error("{0:?} is not a host name or address")]
    Invalid(String),
}

/// An address range, `10.1.0.0/16` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Network {
    type Err = EgressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || EgressError::Invalid(text.to_string());
        let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(invalid());
        }
        Ok(Network { address, prefix })
    }
}

/// Which destinations a tenant's connections may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Internal ranges the operator opened (a lab network); everything public is always allowed.
    allowed: Vec<Network>,
    /// Every address allowed: for development on one machine only.
    open: bool,
}

impl EgressPolicy {
    /// Public addresses only: the production policy.
    pub fn public_only() -> Self {
        EgressPolicy::default()
    }

    /// Public addresses and the internal `ranges` the operator names.
    pub fn allowing(ranges: Vec<Network>) -> Self {
        EgressPolicy {
            allowed: ranges,
            open: false,
        }
    }

    /// Every address, the control plane's own machine included: for development and tests on one
    /// machine, never for a control plane that serves tenants.
    pub fn open() -> Self {
        EgressPolicy {
            allowed: Vec::new(),
            open: true,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Checks one address.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), EgressError> {
        if self.open || self.allowed.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        match internal(ip) {
            Some(why) => Err(EgressError::Internal {
                host: host.to_string(),
                why,
            }),
            None => Ok(()),
        }
    }

    /// Checks a host as a tenant wrote it, before anything is resolved: an address literal in
    /// any spelling, or a name that can only mean this machine (`localhost`, `*.localhost`).
    /// Other names pass here; [`EgressPolicy::resolve`] checks what they resolve to.
    pub fn check_host(&self, host: &str) -> Result<(), EgressError> {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
            return Err(EgressError::Invalid(host.to_string()));
        }
        if let Some(ip) = literal(&name) {
            return self.check_ip(host, ip);
        }
        if !self.open && (name == "localhost" || name.ends_with(".localhost")) {
            return Err(EgressError::Internal {
                host: host.to_string(),
                why: "this machine",
            });
        }
        Ok(())
    }

    /// Resolves `host` and checks every address it resolves to; the caller connects only to what
    /// this returns, so what was checked is what is reached.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        let name = self.name_to_resolve(host, port)?;
        let addresses = match name {
            Err(literal) => Ok(vec![literal]),
            Ok(name) => tokio::net::lookup_host((name, port))
                .await
                .map(|found| found.collect()),
        };
        self.checked(host, addresses)
    }

    /// [`EgressPolicy::resolve`] for synchronous callers (libgit2's fetches run on a blocking
    /// thread).
    pub fn resolve_blocking(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        use std::net::ToSocketAddrs;
        let addresses = match self.name_to_resolve(host, port)? {
            Err(literal) => Ok(vec![literal]),
            Ok(name) => (name, port).to_socket_addrs().map(|found| found.collect()),
        };
        self.checked(host, addresses)
    }

    /// `host` checked as written: the name left to resolve, or (`Err`) the address it spells.
    fn name_to_resolve<'h>(
        &self,
        host: &'h str,
        port: u16,
    ) -> Result<Result<&'h str, SocketAddr>, EgressError> {
        self.check_host(host)?;
        let name = host.trim_start_matches('[').trim_end_matches(']');
        Ok(match literal(&name.to_ascii_lowercase()) {
            Some(ip) => Err(SocketAddr::new(ip, port)),
            None => Ok(name),
        })
    }

    /// What a lookup of `host` found, every address checked.
    fn checked(
        &self,
        host: &str,
        found: std::io::Result<Vec<SocketAddr>>,
    ) -> Result<Vec<SocketAddr>, EgressError> {
        let addresses = found.map_err(|e| EgressError::Unresolved {
            host: host.to_string(),
            reason: e.to_string(),
        })?;
        if addresses.is_empty() {
            return Err(EgressError::Unresolved {
                host: host.to_string(),
                reason: "no address".into(),
            });
        }
        for address in &addresses {
            self.check_ip(host, address.ip())?;
        }
        Ok(addresses)
    }
}

/// The host a URL names (`https://user@host:port/path` → `host`), without scheme, user or port.
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    authority_host(rest.split(['/', '?', '#']).next().unwrap_or(""))
}

/// The host an authority names (`user@host:port`, `[v6]:port`, `host`), without user or port.
pub fn authority_host(authority: &str) -> &str {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    }
}

/// The address `text` names, read as the system's resolver reads literals: IPv6 (with or without
/// brackets) or IPv4 in any of `inet_aton`'s forms (1 to 4 parts, decimal, octal or hex).
pub fn literal(text: &str) -> Option<IpAddr> {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if let Ok(v6) = bare.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(v6));
    }
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let number = |p: &str| -> Option<u64> {
        if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            if hex.is_empty() {
                return Some(0);
            }
            u64::from_str_radix(hex, 16).ok()
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()
        } else {
            p.parse().ok()
        }
    };
    let values: Vec<u64> = parts.iter().map(|p| number(p)).collect::<Option<_>>()?;
    let (last, head) = values.split_last()?;
    if head.iter().any(|v| *v > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << room {
        return None;
    }
    let mut value: u64 = 0;
    for (i, v) in head.iter().enumerate() {
        value |= v << (24 - 8 * i as u32);
    }
    value |= last;
    Some(IpAddr::V4(Ipv4Addr::from(value as u32)))
}

/// The IPv4 address an IPv6 address stands for, when it embeds one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded =
                || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            // IPv4-compatible (`::a.b.c.d`, not `::` or `::1`), NAT64 (`64:ff9b::a.b.c.d`, and
            // the local-use `64:ff9b:1::/48`), 6to4 (`2002:AABB:CCDD::`) and Teredo (`2001::/32`,
            // the client's address stored inverted in the last 32 bits).
            let compatible = s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1);
            let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1];
            let octets = |hi: u16, lo: u16| {
                Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else if compatible || nat64 {
                IpAddr::V4(embedded())
            } else if s[0] == 0x2002 {
                IpAddr::V4(octets(s[1], s[2]))
            } else if s[0] == 0x2001 && s[1] == 0 {
                IpAddr::V4(octets(!s[6], !s[7]))
            } else {
                ip
            }
        }
        v4 => v4,
    }
}

/// What internal range `ip` is in, if any.
fn internal(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if v4.is_private() {
                Some("a private address")
            } else if v4.is_link_local() {
                Some("link-local (the metadata endpoint's range)")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared address space (CGNAT)")
            } else if v4.is_multicast() || v4.is_broadcast() || a >= 240 {
                Some("multicast, broadcast or reserved")
            } else if a == 198 && (18..20).contains(&b) || a == 192 && b == 0 && v4.octets()[2] == 0
            {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a private address")
            } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// What the connect-time tests of the git and S3 clients share: a destination that passes the
/// check of names as written but resolves inside, and a server that counts who reached it.
#[cfg(test)]
pub(crate) mod testing {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// This machine's own name: not `localhost`, so it passes [`super::EgressPolicy::check_host`],
    /// yet it resolves to one of this machine's addresses (loopback or private).
    pub fn own_name() -> String {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("this machine's name (/proc/sys/kernel/hostname)");
        name.trim().to_string()
    }

    /// A TCP server on every interface that answers each connection's request with `answer` and
    /// counts the connections it accepted.
    pub struct Server {
        pub port: u16,
        connections: Arc<AtomicUsize>,
    }

    impl Server {
        pub fn answering(answer: String) -> Self {
            let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let connections = Arc::new(AtomicUsize::new(0));
            let counted = connections.clone();
            std::thread::spawn(move || {
                for mut stream in listener.incoming().flatten() {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    let _ = stream.write_all(answer.as_bytes());
                }
            });
            Server { port, connections }
        }

        pub fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_home_is_refused() {
        let policy = EgressPolicy::public_only();
        for host in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f.1",
            "0177.0.0.1",
            "0",
            "0.0.0.0",
            "[::ffff:127.0.0.1]",
            "::ffff:7f00:1",
            "[::1]",
            "[::]",
            "localhost",
            "localhost.",
            "LOCALHOST",
            "api.localhost",
            "[fe80::1]",
            "169.254.169.254",
            "100.64.0.1",
            "10.0.0.5",
            "172.16.3.4",
            "192.168.1.2",
            "[fd00::1]",
            "[64:ff9b::a9fe:a9fe]",
            "[64:ff9b:1::a9fe:a9fe]",
            "[2002:a9fe:a9fe::]",
            "[2002:7f00:1::1]",
            "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
            "[::127.0.0.1]",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(policy.check_host(host).is_err(), "{host} passed");
        }
        for host in [
            "github.com",
            "gitlab.example.com.",
            "140.82.112.3",
            "[2606:4700::1111]",
            "s3.eu-west-1.amazonaws.com",
        ] {
            assert_eq!(policy.check_host(host), Ok(()), "{host}");
        }
    }

    #[test]
    fn hosts_are_read_from_urls() {
        assert_eq!(url_host("http://127.0.0.1:9000/bucket"), "127.0.0.1");
        assert_eq!(url_host("https://[::1]:443"), "::1");
        assert_eq!(url_host("https://u:p@s3.example.com"), "s3.example.com");
        assert_eq!(url_host("https://s3.example.com?x=1"), "s3.example.com");
    }

    #[test]
    fn literals_are_read_as_the_resolver_reads_them() {
        assert_eq!(literal("127.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(literal("2130706433"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(literal("0x7f.0.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(literal("10.0.258"), Some("10.0.1.2".parse().unwrap()));
        assert_eq!(literal("256.1.1.1"), None);
        assert_eq!(literal("1.2.3.4.5"), None);
        assert_eq!(literal("github.com"), None);
        assert_eq!(literal("1e3"), None);
    }

    #[test]
    fn the_operator_opens_named_ranges_only() {
        let lab = EgressPolicy::allowing(vec!["10.20.0.0/16".parse().unwrap()]);
        assert_eq!(lab.check_host("10.20.3.4"), Ok(()));
        assert!(lab.check_host("10.21.0.1").is_err());
        assert!(lab.check_host("127.0.0.1").is_err());
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert_eq!(EgressPolicy::open().check_host("127.1"), Ok(()));
    }

    #[test]
    fn a_blocking_resolution_checks_every_address_too() {
        let refused = EgressPolicy::public_only()
            .resolve_blocking(&testing::own_name(), 22)
            .unwrap_err();
        assert!(matches!(refused, EgressError::Internal { .. }), "{refused}");
        let found = EgressPolicy::open().resolve_blocking("127.1", 22).unwrap();
        assert_eq!(found, ["127.0.0.1:22".parse().unwrap()]);
    }

    #[tokio::test]
    async fn names_are_checked_by_every_address_they_resolve_to() {
        let policy = EgressPolicy::public_only();
        let refused = policy.resolve("localhost", 22).await.unwrap_err();
        assert!(matches!(refused, EgressError::Internal { .. }), "{refused}");
        let open = EgressPolicy::open().resolve("localhost", 22).await.unwrap();
        assert!(open.iter().all(|a| a.ip().is_loopback()));
    }
}
