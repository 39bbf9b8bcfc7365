//! Memory sizes: libvirt's scaled integers (`<memory unit='GiB'>`), the policy's sizes
//! (`"256MiB"`), and the short human form used in messages (`2.1 GiB`).

/// Bytes per unit for the unit names libvirt accepts (docs: formatdomain "memory").
/// `KB`, `MB`… are powers of 1000; `k`, `KiB`, `M`, `MiB`… powers of 1024. Case matters
/// only where libvirt makes it matter (`b`/`bytes` for bytes).
fn unit_bytes(unit: &str) -> Option<u64> {
    const K: u64 = 1024;
    Some(match unit {
        "b" | "B" | "byte" | "bytes" => 1,
        "KB" | "kB" => 1000,
        "k" | "K" | "KiB" | "kiB" => K,
        "MB" => 1000 * 1000,
        "M" | "m" | "MiB" => K * K,
        "GB" => 1000 * 1000 * 1000,
        "G" | "g" | "GiB" => K * K * K,
        "TB" => 1000u64.pow(4),
        "T" | "t" | "TiB" => K.pow(4),
        "PB" => 1000u64.pow(5),
        "P" | "p" | "PiB" => K.pow(5),
        "EB" => 1000u64.pow(6),
        "E" | "e" | "EiB" => K.pow(6),
        _ => return None,
    })
}

/// Parse a libvirt scaled integer: `value` in `unit` (absent unit = `default_unit`), to bytes.
pub fn libvirt_bytes(value: &str, unit: Option<&str>, default_unit: &str) -> Result<u64, String> {
    let unit = unit.unwrap_or(default_unit);
    let scale = unit_bytes(unit).ok_or_else(|| format!("unknown memory unit '{unit}'"))?;
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("'{}' is not a whole number", value.trim()))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("{n} {unit} is too large"))
}

/// Parse a size written as one token, such as `256MiB`, `1G`, `0`, `512 MiB` (policy files).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("size '{t}' does not start with a number"));
    }
    let unit = unit.trim();
    libvirt_bytes(num, if unit.is_empty() { None } else { Some(unit) }, "b")
        .map_err(|e| format!("size '{t}': {e}"))
}

/// A short human form: `2 MiB`, `1 GiB`, `2.1 GiB`, `512 KiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut i = 0;
    while value >= 1024.0 && i + 1 < UNITS.len() {
        value /= 1024.0;
        i += 1;
    }
    if i == 0 || (value - value.round()).abs() < 0.05 {
        format!("{} {}", value.round() as u64, UNITS[i])
    } else {
        format!("{value:.1} {}", UNITS[i])
    }
}

/// A page size in KiB as people say it: `2 MiB`, `1 GiB`, `4 KiB`.
pub fn page_size_name(kib: u64) -> String {
    human(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_units_distinguish_decimal_and_binary() {
        assert_eq!(libvirt_bytes("1", Some("KB"), "KiB"), Ok(1000));
        assert_eq!(libvirt_bytes("1", Some("KiB"), "KiB"), Ok(1024));
        assert_eq!(libvirt_bytes("2", Some("G"), "KiB"), Ok(2 << 30));
        assert_eq!(libvirt_bytes("3", Some("MB"), "KiB"), Ok(3_000_000));
        assert_eq!(libvirt_bytes("7", Some("bytes"), "KiB"), Ok(7));
    }

    #[test]
    fn libvirt_value_without_unit_uses_default() {
        assert_eq!(libvirt_bytes("1048576", None, "KiB"), Ok(1 << 30));
    }

    #[test]
    fn libvirt_rejects_unknown_unit_and_overflow() {
        assert!(libvirt_bytes("1", Some("parsecs"), "KiB").is_err());
        assert!(libvirt_bytes("99999999999", Some("EiB"), "KiB").is_err());
        assert!(libvirt_bytes("-1", None, "KiB").is_err());
    }

    #[test]
    fn policy_sizes_parse_with_and_without_space() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn human_sizes_round_sensibly() {
        assert_eq!(human(2 << 20), "2 MiB");
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(2_254_857_830), "2.1 GiB");
        assert_eq!(page_size_name(2048), "2 MiB");
    }
}
