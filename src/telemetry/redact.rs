//! Settings' URLs as logs and errors may show them: without their passwords.

/// The URL with its user info and every query parameter whose name ends in `password`
/// (`password`, `sentinel_password`: any may hold one) replaced by `***`, for logs and
/// errors.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{}:…", url.split(':').next().unwrap_or_default());
    };
    // the last `@` anywhere: a password may hold `/`, `?` or `#` (a URL that then does
    // not parse is still printed in errors); too much hidden beats a password shown
    let url = match rest.rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    };
    let Some((base, query)) = url.split_once('?') else {
        return url;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.to_ascii_lowercase().ends_with("password") => {
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn redacted_urls_never_show_a_password() {
        assert_eq!(
            redacted("redis://:hunter2@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(
            redacted("rediss://user:hunter2@cache"),
            "rediss://***@cache"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redacted("nonsense:hunter2"), "nonsense:…");
        assert_eq!(
            redacted("rediss://:hun/ter?2#x@cache:6380"),
            "rediss://***@cache:6380"
        );
        assert_eq!(
            redacted("postgres://db.example/app?sslmode=require&password=hunter2&x=1"),
            "postgres://db.example/app?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            redacted("redis+sentinel://u:p@s1:26379,s2:26379/m?sentinel_password=hunter2"),
            "redis+sentinel://***@s1:26379,s2:26379/m?sentinel_password=***"
        );
    }
}
