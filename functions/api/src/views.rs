//! Model objects as CloudStack's responses show them (field names, ids as
//! UUID strings, dates in CloudStack's format, nulls left out).

use serde_json::{Value, json};
use stratus_cloudstack::date;
use stratus_model::{Zone, state_name};

pub fn zone(z: &Zone) -> Value {
    json!({
        "id": z.id.to_string(),
        "name": z.name,
        "networktype": state_name(&z.network_type),
        "allocationstate": state_name(&z.allocation_state),
        "securitygroupsenabled": z.security_groups_enabled,
        "localstorageenabled": z.local_storage_enabled,
        "dns1": z.dns1,
        "internaldns1": z.internal_dns1,
        "guestcidraddress": z.guest_cidr_address,
        "created": date::format(z.created),
    })
}
