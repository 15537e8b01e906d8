//! `resolvConf`: a resolv.conf file turned into the result's `dns`, as the reference's
//! `parseResolvConf` (`nameserver` and `search`/`options` accumulate, the last `domain` wins,
//! `#` and `;` start comment lines, unknown keywords are ignored).

use std::path::Path;

use cni_core::{CniError, Code, Dns};

pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(keyword), Some(first)) = (fields.next(), fields.next()) else {
            continue;
        };
        match keyword {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = first.to_string(),
            "search" => {
                dns.search.push(first.to_string());
                dns.search.extend(fields.map(str::to_string));
            }
            "options" => {
                dns.options.push(first.to_string());
                dns.options.extend(fields.map(str::to_string));
            }
            _ => {}
        }
    }
    dns
}

/// Reads and parses the file; an unreadable file fails the ADD, naming the path.
pub fn parse_file(path: &Path) -> Result<Dns, CniError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CniError::new(
            Code::Io,
            format!("cannot read ipam.resolvConf {}: {e}", path.display()),
        )
    })?;
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn simple() {
        let d = parse("nameserver 192.0.2.0\n");
        assert_eq!(d.nameservers, v(&["192.0.2.0"]));
        assert!(d.domain.is_empty() && d.search.is_empty() && d.options.is_empty());
    }

    #[test]
    fn comments_are_skipped() {
        let d = parse(
            "nameserver 192.0.2.0\n# nameserver 192.0.2.1\n; nameserver 192.0.2.2\n   #x\nnameserver 192.0.2.3 # trailing\n",
        );
        assert_eq!(d.nameservers, v(&["192.0.2.0", "192.0.2.3"]));
    }

    #[test]
    fn all_fields_accumulate() {
        let d = parse(
            "nameserver 192.0.2.0\r\nnameserver 192.0.2.2\ndomain example.org\ndomain example.com\n\
             search example.com example.org\nsearch example.net\noptions one two three\n\
             options four\nsortlist 10.0.0.0\nnameserver\nbogus line here\n",
        );
        assert_eq!(d.nameservers, v(&["192.0.2.0", "192.0.2.2"]));
        assert_eq!(d.domain, "example.com");
        assert_eq!(d.search, v(&["example.com", "example.org", "example.net"]));
        assert_eq!(d.options, v(&["one", "two", "three", "four"]));
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let e = parse_file(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert_eq!(e.code, 5);
        assert!(e.msg.contains("/nonexistent/resolv.conf"), "{}", e.msg);
    }
}
