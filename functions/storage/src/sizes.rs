//! Volume sizes as CloudStack computes, checks and prints them for a
//! deploy: the root disk from the template or `rootdisksize`, a data disk
//! from its disk offering or `size`, and the texts of the refusals
//! (`UserVmManagerImpl.configureCustomRootDiskSize`, `verifyAndGetDiskSize`,
//! `validateRootDiskResize`; `VolumeApiServiceImpl.validateVolumeSizeInBytes`,
//! `validateCustomDiskOfferingSizeRange`, `allocVolume`).
//!
//! The limits below are CloudStack settings that Stratus's settings registry
//! does not hold yet; their CloudStack defaults apply.

use stratus_messaging::step::StepError;
use stratus_model::{DiskOffering, Template};

/// Bytes in a GiB: CloudStack's `GB` sizes are binary (`size << 30`).
pub const GIB: u64 = 1 << 30;

/// `custom.diskoffering.size.min` (GB), CloudStack's default.
pub const CUSTOM_DISK_OFFERING_MIN_GB: u64 = 1;
/// `custom.diskoffering.size.max` (GB), CloudStack's default.
pub const CUSTOM_DISK_OFFERING_MAX_GB: u64 = 1024;
/// `storage.max.volume.size` (GB), CloudStack's default.
pub const MAX_VOLUME_SIZE_GB: u64 = 2000;

/// CloudStack's code for an `InvalidParameterValueException`.
const PARAM_ERROR: u16 = 431;

fn invalid(text: impl Into<String>) -> StepError {
    StepError::failed(PARAM_ERROR, text)
}

/// The root volume's size in bytes: `rootdisksize` GiB when given (a
/// positive number, within the largest volume, not below the template),
/// else the template's size.
pub fn root_size(template: &Template, root_disk_size_gb: Option<u64>) -> Result<u64, StepError> {
    let Some(gb) = root_disk_size_gb else {
        return Ok(template.size);
    };
    if gb == 0 {
        return Err(invalid("Root disk size should be a positive number."));
    }
    let bytes = gib_to_bytes(gb)?;
    if bytes < template.size {
        return Err(invalid(format!(
            "Unsupported: rootdisksize override ({gb} GB) is smaller than template size {}",
            human_readable_size(template.size)
        )));
    }
    Ok(bytes)
}

/// The data volume's size in bytes: `size` GiB for a custom offering (which
/// requires it, within the custom range), else the offering's size (which
/// allows no `size`).
///
/// CloudStack's deploy ignores `size` with a fixed offering; Stratus refuses
/// it as `createVolume` does, so a caller's size is never silently dropped.
pub fn data_size(offering: &DiskOffering, size_gb: Option<u64>) -> Result<u64, StepError> {
    let bytes = if offering.is_customized {
        let Some(gb) = size_gb else {
            return Err(invalid(
                "This disk offering requires a custom size specified",
            ));
        };
        if !(CUSTOM_DISK_OFFERING_MIN_GB..=CUSTOM_DISK_OFFERING_MAX_GB).contains(&gb) {
            return Err(invalid(format!(
                "Volume size: {gb} GB is out of allowed range. Min: {CUSTOM_DISK_OFFERING_MIN_GB}. Max: {CUSTOM_DISK_OFFERING_MAX_GB}"
            )));
        }
        gib_to_bytes(gb)?
    } else {
        if size_gb.is_some() {
            return Err(invalid("This disk offering does not allow custom size"));
        }
        // The model keeps an offering's size in GB (CloudStack's row keeps bytes).
        gib_to_bytes(offering.disk_size)?
    };
    Ok(bytes)
}

/// GiB to bytes, within `storage.max.volume.size` and at least 1 GB
/// (`validateVolumeSizeInBytes`; 0 is let through there, as here, for a
/// size-less offering).
fn gib_to_bytes(gb: u64) -> Result<u64, StepError> {
    if gb > MAX_VOLUME_SIZE_GB {
        // Past the limit the bytes may not even fit in 64 bits: print the
        // size from its GB (exact in the units CloudStack prints).
        return Err(invalid(format!(
            "Requested volume size is {}, but the maximum size allowed is {MAX_VOLUME_SIZE_GB} GB.",
            readable_size_of_gib(gb)
        )));
    }
    Ok(gb * GIB)
}

/// `NumbersUtil.toReadableSize` of `gb` GiB without computing the bytes.
fn readable_size_of_gib(gb: u64) -> String {
    match gb.checked_mul(GIB) {
        Some(bytes) => readable_size(bytes),
        None => format!("{} TB", java_fixed(gb as f32 as f64 / 1024.0, 4)),
    }
}

/// CloudStack's `NumbersUtil.toHumanReadableSize` with human-readable sizes
/// on (its default): `"<bytes> (<readable>)"`, e.g. `52428800 (50.00 MB)`.
pub fn human_readable_size(bytes: u64) -> String {
    format!("{bytes} ({})", readable_size(bytes))
}

/// CloudStack's `NumbersUtil.toReadableSize`: bytes below 1 KB, else KB, MB
/// or GB with two decimals, TB with four, computed in Java `float`s.
pub fn readable_size(bytes: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = KB * 1024;
    const GB: u64 = MB * 1024;
    const TB: u64 = GB * 1024;
    if bytes < KB {
        return format!("{bytes} bytes");
    }
    let (unit, divisor, digits) = if bytes < MB {
        ("KB", KB, 2)
    } else if bytes < GB {
        ("MB", MB, 2)
    } else if bytes < TB {
        ("GB", GB, 2)
    } else {
        ("TB", TB, 4)
    };
    let value = bytes as f32 / divisor as f32;
    format!("{} {unit}", java_fixed(value as f64, digits))
}

/// Java's `String.format("%.Nf", f)`: the shortest decimal digits of the
/// (float widened to) double, rounded half up at `digits` decimals (Rust's
/// `{:.N}` rounds the exact binary value half to even, which differs on ties
/// such as 1.125). For the non-negative sizes printed here.
fn java_fixed(value: f64, digits: usize) -> String {
    // Rust's Display of an f64 is its shortest round-trip decimal, never in
    // exponent form.
    let shortest = format!("{value}");
    let (int_part, frac_part) = shortest.split_once('.').unwrap_or((&shortest, ""));
    let mut kept: Vec<u8> = int_part
        .bytes()
        .chain(
            frac_part
                .bytes()
                .chain(std::iter::repeat(b'0'))
                .take(digits),
        )
        .map(|b| b - b'0')
        .collect();
    let round_up = frac_part.as_bytes().get(digits).is_some_and(|d| *d >= b'5');
    if round_up {
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, 1);
                break;
            }
            i -= 1;
            if kept[i] == 9 {
                kept[i] = 0;
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    let split = kept.len() - digits;
    let text = |ds: &[u8]| ds.iter().map(|d| char::from(b'0' + d)).collect::<String>();
    if digits == 0 {
        text(&kept)
    } else {
        format!("{}.{}", text(&kept[..split]), text(&kept[split..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_model::samples::{Fixture, Sample};

    fn template(size: u64) -> Template {
        Template {
            size,
            ..Template::sample(&Fixture::default())
        }
    }

    fn offering(disk_size: u64, is_customized: bool) -> DiskOffering {
        DiskOffering {
            disk_size,
            is_customized,
            ..DiskOffering::sample(&Fixture::default())
        }
    }

    fn failed(r: Result<u64, StepError>) -> (u16, String) {
        match r {
            Err(StepError::Failed { code, text }) => (code, text),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn sizes_print_as_cloudstack_prints_them() {
        assert_eq!(human_readable_size(500), "500 (500 bytes)");
        assert_eq!(human_readable_size(1536), "1536 (1.50 KB)");
        assert_eq!(human_readable_size(50 << 20), "52428800 (50.00 MB)");
        assert_eq!(human_readable_size(10 * GIB), "10737418240 (10.00 GB)");
        assert_eq!(readable_size(3 << 40), "3.0000 TB");
        // 1.125 GB: Java rounds the tie up, Rust's {:.2} would give 1.12.
        assert_eq!(readable_size(GIB + GIB / 8), "1.13 GB");
        // Just under 1 GB: the float division already gives 1024, as in Java.
        assert_eq!(readable_size(GIB - 1), "1024.00 MB");
        // Rounding that carries into the integer part.
        assert_eq!(java_fixed(9.995, 2), "10.00");
        assert_eq!(java_fixed(2.0, 2), "2.00");
    }

    #[test]
    fn the_root_disk_is_the_template_or_rootdisksize() {
        let t = template(10 * GIB);
        assert_eq!(root_size(&t, None).unwrap(), 10 * GIB);
        assert_eq!(root_size(&t, Some(10)).unwrap(), 10 * GIB);
        assert_eq!(root_size(&t, Some(20)).unwrap(), 20 * GIB);
        assert_eq!(
            failed(root_size(&t, Some(5))),
            (
                431,
                "Unsupported: rootdisksize override (5 GB) is smaller than template size 10737418240 (10.00 GB)".into()
            )
        );
        assert_eq!(
            failed(root_size(&t, Some(0))),
            (431, "Root disk size should be a positive number.".into())
        );
        let (code, text) = failed(root_size(&t, Some(u64::MAX)));
        assert_eq!(code, 431);
        assert!(
            text.starts_with("Requested volume size is ")
                && text.ends_with("but the maximum size allowed is 2000 GB."),
            "{text}"
        );
        assert_eq!(
            failed(root_size(&t, Some(2001))).1,
            "Requested volume size is 1.9541 TB, but the maximum size allowed is 2000 GB."
        );
    }

    #[test]
    fn the_data_disk_is_the_offering_or_the_custom_size() {
        assert_eq!(data_size(&offering(5, false), None).unwrap(), 5 * GIB);
        assert_eq!(
            failed(data_size(&offering(5, false), Some(8))),
            (431, "This disk offering does not allow custom size".into())
        );
        assert_eq!(data_size(&offering(0, true), Some(30)).unwrap(), 30 * GIB);
        assert_eq!(
            failed(data_size(&offering(0, true), None)),
            (
                431,
                "This disk offering requires a custom size specified".into()
            )
        );
        assert_eq!(
            failed(data_size(&offering(0, true), Some(0))).1,
            "Volume size: 0 GB is out of allowed range. Min: 1. Max: 1024"
        );
        assert_eq!(
            failed(data_size(&offering(0, true), Some(1025))).1,
            "Volume size: 1025 GB is out of allowed range. Min: 1. Max: 1024"
        );
    }
}
