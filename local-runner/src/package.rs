//! `stratus-local package`: the functions' Lambda packages. Each function of
//! the manifest is built for Lambda's `provided.al2023` runtime and written as
//! `<out>/<function>.zip`, holding its binary as `bootstrap`, and
//! `<out>/checksums.json` gives each zip's base64 SHA-256 (Terraform's
//! `filebase64sha256`) for `source_code_hash`.
//!
//! The zips are reproducible: one entry, fixed timestamp (1980-01-01), fixed
//! mode (0755), deflate at a fixed level, no extra fields, so packaging the
//! same binary twice gives the same bytes (and Terraform sees no change).
//!
//! Checks before zipping: the binary needs no glibc newer than Lambda's
//! (provided.al2023 has glibc 2.34), is under Lambda's 250 MB unzipped limit,
//! and its zip is under the 50 MB direct-upload limit.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stratus_contracts::manifest::Manifest;

/// The glibc of Lambda's `provided.al2023` runtime (Amazon Linux 2023).
pub const LAMBDA_GLIBC: (u32, u32) = (2, 34);
/// Lambda's limit for a zip uploaded directly (CreateFunction/UpdateFunctionCode), 50 MB.
pub const MAX_ZIP_BYTES: u64 = 50 * 1024 * 1024;
/// Lambda's limit for a function's unzipped code, 250 MB (262,144,000 bytes).
pub const MAX_BINARY_BYTES: u64 = 250 * 1024 * 1024;
/// The file Lambda's custom runtimes run.
pub const ENTRY: &str = "bootstrap";
pub const CHECKSUMS: &str = "checksums.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "arm64")]
    Arm64,
}

impl Arch {
    pub fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }
}

/// What a cross build for arm64 needs on an x86_64 (Debian) machine.
const ARM64_NEEDS: &str = "an arm64 (Graviton) build on this machine needs:\n  \
    rustup target add aarch64-unknown-linux-gnu\n  \
    apt-get install gcc-aarch64-linux-gnu   (Debian's cross linker and libc)\n  \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc (set by this command when the linker is on PATH)\n  \
    and an objdump that reads aarch64 ELF files (binutils' generic ELF support, or binutils-aarch64-linux-gnu) for the glibc check";
const ARM64_LINKER: &str = "aarch64-linux-gnu-gcc";
const ARM64_LINKER_ENV: &str = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER";

#[derive(clap::Args, Clone)]
pub struct PackageArgs {
    /// The function manifest.
    #[arg(long, default_value = "infra/manifest.json")]
    pub manifest: PathBuf,
    /// Package only this function (repeatable); default: every function of the manifest.
    #[arg(long = "only", value_name = "NAME")]
    pub only: Vec<String>,
    /// The cargo profile to build with.
    #[arg(long, default_value = "release")]
    pub profile: String,
    /// Lambda's architecture.
    #[arg(long, value_enum, default_value = "x86_64")]
    pub arch: Arch,
    /// Package binaries already built (in --bin-dir) instead of building them.
    #[arg(long)]
    pub no_build: bool,
    /// Where the built binaries are (default: cargo's target/<triple>/<profile>).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where the zips and checksums.json go.
    #[arg(long, default_value = "dist/lambda")]
    pub out: PathBuf,
}

/// One function's entry in `checksums.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checksum {
    pub zip: String,
    /// Base64 of the SHA-256 of the zip's bytes: Terraform's `filebase64sha256`.
    pub base64sha256: String,
    pub bytes: u64,
}

pub fn base64sha256(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// The zip of one binary: a single entry `bootstrap`, mode 0755 (a regular
/// file), 1980-01-01 00:00:00, deflate at level 9, no extra fields, Unix as
/// the system "made by". The same binary always gives the same bytes.
pub fn zip_bytes(binary: &[u8]) -> anyhow::Result<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(6))
        .last_modified_time(zip::DateTime::DEFAULT)
        .system(zip::System::Unix)
        // S_IFREG | 0755 in the high 16 bits, as Info-ZIP writes it.
        .external_attributes((0o100755u32) << 16)
        .large_file(false);
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer.start_file(ENTRY, options)?;
    writer.write_all(binary)?;
    Ok(writer.finish()?.into_inner())
}

/// Reads `bootstrap` out of a function's zip (as Lambda does), checking that
/// it is the only entry.
pub fn read_bootstrap(zip_path: &Path) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(zip_path).with_context(|| format!("opening {}", zip_path.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip file", zip_path.display()))?;
    let names = archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<Vec<String>, _>>()
        .with_context(|| format!("reading {}", zip_path.display()))?;
    if names != [ENTRY] {
        bail!(
            "{}: a function's zip holds exactly one entry `{ENTRY}`; it holds {names:?}",
            zip_path.display()
        );
    }
    let mut entry = archive.by_name(ENTRY)?;
    if entry.size() > MAX_BINARY_BYTES {
        bail!(
            "{}: `{ENTRY}` is {} bytes unzipped, over Lambda's {MAX_BINARY_BYTES}",
            zip_path.display(),
            entry.size()
        );
    }
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut out)?;
    Ok(out)
}

/// The highest `GLIBC_x.y[.z]` version in `objdump -T` output (the versions of
/// the dynamic symbols the binary imports), as (major, minor); None when it
/// names none (a static binary).
pub fn max_glibc(objdump_t: &str) -> Option<(u32, u32)> {
    let mut max = None;
    for (i, _) in objdump_t.match_indices("GLIBC_") {
        let rest = &objdump_t[i + "GLIBC_".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let mut parts = rest[..end].split('.').filter(|p| !p.is_empty());
        // GLIBC_PRIVATE and the like carry no number.
        let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) {
            max = max.max(Some((major, minor)));
        }
    }
    max
}

/// The highest glibc version `binary` requires, from `objdump -T`.
pub fn required_glibc(binary: &Path) -> anyhow::Result<Option<(u32, u32)>> {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .map_err(|e| anyhow!("running `objdump -T` for the glibc check: {e} (install binutils)"))?;
    if !out.status.success() {
        bail!(
            "`objdump -T {}` failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(max_glibc(&String::from_utf8_lossy(&out.stdout)))
}

/// Fails when `binary` needs a glibc newer than `limit`.
pub fn check_glibc(binary: &Path, limit: (u32, u32)) -> anyhow::Result<Option<(u32, u32)>> {
    let needed = required_glibc(binary)?;
    if let Some(v) = needed
        && v > limit
    {
        bail!(
            "{} needs GLIBC_{}.{}, newer than the {}.{} of Lambda's provided.al2023 runtime: it would not start there. \
             Build on an older glibc (e.g. in an Amazon Linux 2023 container) or avoid the symbols (`objdump -T {} | grep GLIBC_{}.{}` names them)",
            binary.display(),
            v.0,
            v.1,
            limit.0,
            limit.1,
            binary.display(),
            v.0,
            v.1
        );
    }
    Ok(needed)
}

/// The packages of the workspace's binaries (`cargo metadata --no-deps`), and the target directory.
fn cargo_metadata(workdir: &Path) -> anyhow::Result<(BTreeMap<String, String>, PathBuf)> {
    let out = Command::new(cargo())
        .current_dir(workdir)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running `cargo metadata`")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut bins = BTreeMap::new();
    for p in v["packages"].as_array().into_iter().flatten() {
        let package = p["name"].as_str().unwrap_or_default();
        for t in p["targets"].as_array().into_iter().flatten() {
            if t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
                && let Some(name) = t["name"].as_str()
            {
                bins.insert(name.to_string(), package.to_string());
            }
        }
    }
    let target = v["target_directory"]
        .as_str()
        .ok_or_else(|| anyhow!("`cargo metadata` gave no target_directory"))?;
    Ok((bins, PathBuf::from(target)))
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// cargo's output directory for a profile: `dev` builds go to `debug`.
fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        p => p,
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so
/// that a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn package(args: PackageArgs) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::load(&args.manifest)?;
    for name in &args.only {
        if manifest.function(name).is_none() {
            bail!(
                "--only {name}: {} has no function named {name:?}",
                args.manifest.display()
            );
        }
    }
    let functions: Vec<_> = manifest
        .functions
        .iter()
        .filter(|f| args.only.is_empty() || args.only.contains(&f.name))
        .collect();
    if functions.is_empty() {
        bail!("{} names no function", args.manifest.display());
    }
    let triple = args.arch.triple();
    // cargo runs where the manifest is (infra/, inside the workspace), so the
    // command works from any directory.
    let workdir = match args.manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if args.arch == Arch::Arm64 {
        eprintln!("stratus-local package: arm64: {ARM64_NEEDS}");
    }

    let bin_dir = if args.no_build {
        match &args.bin_dir {
            Some(d) => d.clone(),
            None => cargo_metadata(&workdir)?
                .1
                .join(triple)
                .join(profile_dir(&args.profile)),
        }
    } else {
        let (bins, target) = cargo_metadata(&workdir)?;
        let mut cmd = Command::new(cargo());
        cmd.current_dir(&workdir);
        cmd.args(["build", "--profile", &args.profile, "--target", triple]);
        let mut packages: Vec<&str> = Vec::new();
        for f in &functions {
            let package = bins.get(&f.binary).ok_or_else(|| {
                anyhow!(
                    "function {}: no package of the workspace has a binary {:?} (cargo metadata)",
                    f.name,
                    f.binary
                )
            })?;
            if !packages.contains(&package.as_str()) {
                packages.push(package);
            }
        }
        for p in &packages {
            cmd.args(["-p", p]);
        }
        for f in &functions {
            cmd.args(["--bin", &f.binary]);
        }
        if args.arch == Arch::Arm64
            && std::env::var_os(ARM64_LINKER_ENV).is_none()
            && on_path(ARM64_LINKER)
        {
            cmd.env(ARM64_LINKER_ENV, ARM64_LINKER);
        }
        eprintln!(
            "stratus-local package: building {} binar{} ({triple}, profile {}): {:?}",
            functions.len(),
            if functions.len() == 1 { "y" } else { "ies" },
            args.profile,
            cmd
        );
        let started = std::time::Instant::now();
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            if args.arch == Arch::Arm64 {
                eprintln!("stratus-local package: {ARM64_NEEDS}");
            }
            bail!("cargo build failed ({status})");
        }
        eprintln!(
            "stratus-local package: built in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        match &args.bin_dir {
            Some(d) => d.clone(),
            None => target.join(triple).join(profile_dir(&args.profile)),
        }
    };

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let checksums_path = args.out.join(CHECKSUMS);
    // The functions packaged before (another --only run) stay in checksums.json
    // while their zip is still there, unchanged, and they are still in the manifest.
    let mut checksums: BTreeMap<String, Checksum> = match std::fs::read(&checksums_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", checksums_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", checksums_path.display())),
    };
    checksums.retain(|name, c| {
        let keep = manifest.function(name).is_some()
            && std::fs::read(args.out.join(&c.zip)).is_ok_and(|b| base64sha256(&b) == c.base64sha256);
        if !keep && !functions.iter().any(|f| &f.name == name) {
            eprintln!("stratus-local package: {name}: dropped from {CHECKSUMS} (not in the manifest, or its zip is missing or changed)");
        }
        keep
    });

    for f in &functions {
        let path = bin_dir.join(&f.binary);
        let binary = std::fs::read(&path).with_context(|| {
            format!(
                "function {}: reading its binary {} (build it, or give --bin-dir)",
                f.name,
                path.display()
            )
        })?;
        let binary_len = binary.len() as u64;
        if binary_len > MAX_BINARY_BYTES {
            bail!(
                "function {}: {} is {} bytes ({}), over Lambda's unzipped limit of {MAX_BINARY_BYTES} bytes (250 MB); is it stripped (`strip = true` in the profile)?",
                f.name,
                path.display(),
                binary_len,
                mb(binary_len)
            );
        }
        let glibc =
            check_glibc(&path, LAMBDA_GLIBC).with_context(|| format!("function {}", f.name))?;
        let zip = zip_bytes(&binary).with_context(|| format!("function {}: zipping", f.name))?;
        let zip_len = zip.len() as u64;
        if zip_len >= MAX_ZIP_BYTES {
            bail!(
                "function {}: its zip is {zip_len} bytes ({}), over Lambda's direct-upload limit of {MAX_ZIP_BYTES} bytes (50 MB); strip the binary or upload through S3",
                f.name,
                mb(zip_len)
            );
        }
        let zip_name = format!("{}.zip", f.name);
        let checksum = Checksum {
            zip: zip_name.clone(),
            base64sha256: base64sha256(&zip),
            bytes: zip_len,
        };
        write_atomic(&args.out.join(&zip_name), &zip)?;
        eprintln!(
            "stratus-local package: {}: {} ({}) -> {} ({}), glibc {}, sha256 {}",
            f.name,
            path.display(),
            mb(binary_len),
            args.out.join(&zip_name).display(),
            mb(zip_len),
            glibc.map_or("none".to_string(), |(a, b)| format!("{a}.{b}")),
            checksum.base64sha256
        );
        checksums.insert(f.name.clone(), checksum);
    }
    let mut json = serde_json::to_vec_pretty(&checksums)?;
    json.push(b'\n');
    write_atomic(&checksums_path, &json)?;
    eprintln!(
        "stratus-local package: {} ({} function{})",
        checksums_path.display(),
        checksums.len(),
        if checksums.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJDUMP: &str = "\n\
fake:     file format elf64-x86-64\n\n\
DYNAMIC SYMBOL TABLE:\n\
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.2.5) malloc\n\
0000000000000000      DF *UND*\t0000000000000000  GLIBC_2.34  __libc_start_main\n\
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.3.4) __sprintf_chk\n\
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_PRIVATE) _dl_x\n\
0000000000000000  w   D  *UND*\t0000000000000000  Base        __gmon_start__\n";

    #[test]
    fn the_highest_glibc_version_is_found() {
        assert_eq!(max_glibc(OBJDUMP), Some((2, 34)));
        assert_eq!(
            max_glibc("GLIBC_2.9 GLIBC_2.17"),
            Some((2, 17)),
            "numeric, not text, order"
        );
        assert_eq!(max_glibc("no versions here GLIBC_PRIVATE"), None);
    }

    /// The glibc check on a real binary (this test's own): it passes with the
    /// version the binary needs as the limit, and fails when the limit is lower.
    #[test]
    fn the_glibc_check_fails_when_the_limit_is_lower() {
        let me = std::env::current_exe().unwrap();
        let needed = required_glibc(&me).unwrap().expect("a glibc binary");
        println!("this test binary needs GLIBC_{}.{}", needed.0, needed.1);
        assert_eq!(check_glibc(&me, needed).unwrap(), Some(needed));
        let lower = (needed.0, needed.1 - 1);
        let err = check_glibc(&me, lower).unwrap_err().to_string();
        assert!(
            err.contains(&format!("needs GLIBC_{}.{}", needed.0, needed.1)),
            "{err}"
        );
        assert!(check_glibc(&me, (2, 0)).is_err());
    }

    #[test]
    fn the_zip_is_reproducible_and_holds_only_bootstrap() {
        let binary: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let a = zip_bytes(&binary).unwrap();
        let b = zip_bytes(&binary).unwrap();
        assert_eq!(a, b);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&a)).unwrap();
        assert_eq!(archive.len(), 1);
        let entry = archive.by_index(0).unwrap();
        assert_eq!(entry.name().unwrap(), ENTRY);
        assert_eq!(entry.unix_mode(), Some(0o100755));
        assert_eq!(entry.compression(), zip::CompressionMethod::Deflated);
        assert!(entry.extra_data().is_none_or(|e| e.is_empty()));
        assert_eq!(entry.last_modified(), Some(zip::DateTime::DEFAULT));
    }
}
