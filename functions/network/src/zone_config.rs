//! What a zone gives its isolated guest networks: the guest CIDR (every
//! isolated network of the zone uses it, as in CloudStack, since each is its
//! own VLAN) and the guest VLAN range.

use std::net::Ipv4Addr;

/// The guest CIDR of a zone that names none (a zone's `guestcidraddress`
/// is usually this in CloudStack's own setups).
pub const DEFAULT_GUEST_CIDR: &str = "10.1.1.0/24";

/// The largest VLAN id (802.1Q).
const MAX_VLAN: u32 = 4094;

/// A guest network's addressing, derived from a CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCidr {
    /// Normalised: host bits cleared (`10.1.1.0/24`).
    pub cidr: String,
    /// The first address after the network address: the gateway of an
    /// isolated network, whose virtual router holds it.
    pub gateway: Ipv4Addr,
    pub netmask: Ipv4Addr,
}

impl GuestCidr {
    /// None when `cidr` is not `a.b.c.d/n` with n in 8..=30 (the sizes the
    /// store's address allocation accepts).
    pub fn parse(cidr: &str) -> Option<Self> {
        let (base, bits) = cidr.trim().split_once('/')?;
        let base: Ipv4Addr = base.trim().parse().ok()?;
        let bits: u32 = bits.trim().parse().ok().filter(|b| (8..=30).contains(b))?;
        let mask = u32::MAX << (32 - bits);
        let first = u32::from(base) & mask;
        Some(Self {
            cidr: format!("{}/{bits}", Ipv4Addr::from(first)),
            gateway: Ipv4Addr::from(first + 1),
            netmask: Ipv4Addr::from(mask),
        })
    }
}

/// A zone's guest VLAN range, CloudStack's `vnet` format: `100-200`, or
/// several ranges and single VLANs separated by commas (`100-200,300`).
/// Returned sorted by start; None when malformed.
pub fn parse_vlan_range(range: &str) -> Option<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for part in range.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let v: u32 = part.parse().ok()?;
                (v, v)
            }
        };
        if a == 0 || a > b || b > MAX_VLAN {
            return None;
        }
        out.push((a, b));
    }
    out.sort_unstable();
    Some(out)
}

/// The VLANs of sorted `ranges`, lowest first, each once (ranges may overlap).
pub fn vlans(ranges: &[(u32, u32)]) -> impl Iterator<Item = u32> + '_ {
    let mut next = 0u32;
    ranges.iter().flat_map(move |&(a, b)| {
        let start = a.max(next);
        next = next.max(b.saturating_add(1));
        start..=b
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cidr_gives_its_gateway_and_netmask() {
        let c = GuestCidr::parse("10.1.1.77/24").unwrap();
        assert_eq!(c.cidr, "10.1.1.0/24");
        assert_eq!(c.gateway, Ipv4Addr::new(10, 1, 1, 1));
        assert_eq!(c.netmask, Ipv4Addr::new(255, 255, 255, 0));
        let c = GuestCidr::parse("10.1.0.0/16").unwrap();
        assert_eq!(c.netmask, Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(
            GuestCidr::parse("192.168.4.8/30").unwrap().gateway,
            Ipv4Addr::new(192, 168, 4, 9)
        );
        for bad in [
            "10.1.1.0",
            "10.1.1.0/31",
            "10.1.1.0/7",
            "x/24",
            "10.1.1/24",
            "",
        ] {
            assert_eq!(GuestCidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn vlan_ranges_parse_as_cloudstack_writes_them() {
        assert_eq!(parse_vlan_range("100-200"), Some(vec![(100, 200)]));
        assert_eq!(
            parse_vlan_range(" 300 , 100-102 "),
            Some(vec![(100, 102), (300, 300)])
        );
        assert_eq!(parse_vlan_range(""), Some(vec![]));
        for bad in ["200-100", "0-10", "1-5000", "a-b", "10-", "-"] {
            assert_eq!(parse_vlan_range(bad), None, "{bad}");
        }
        let r = parse_vlan_range("105-106,100-102,101-103").unwrap();
        assert_eq!(
            vlans(&r).collect::<Vec<_>>(),
            vec![100, 101, 102, 103, 105, 106]
        );
    }
}
