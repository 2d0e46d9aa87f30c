//! Virtual-hosted-style addressing (`--domain`): `bucket.DOMAIN` names a bucket; requests to
//! `DOMAIN` itself, or to any other host name, stay path-style, so that clients that address
//! the server by `localhost` or another name keep working.

use s3s::host::{S3Host, VirtualHost};
use s3s::S3Result;

/// Bucket names taken from `<bucket>.<domain>` host headers.
#[derive(Debug, Clone)]
pub(crate) struct BucketSubdomains {
    domain: String,
}

impl BucketSubdomains {
    /// Serves buckets as subdomains of `domain` (e.g. `s3.example.test`).
    pub(crate) fn new(domain: &str) -> Result<Self, String> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.len() <= 253
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if valid {
            Ok(BucketSubdomains { domain })
        } else {
            Err(format!("'{domain}' is not a valid domain name"))
        }
    }
}

impl S3Host for BucketSubdomains {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        });
        let name = name.trim_end_matches('.');
        let bucket = name
            .len()
            .checked_sub(self.domain.len() + 1)
            .filter(|&at| name[at + 1..].eq_ignore_ascii_case(&self.domain) && name.as_bytes()[at] == b'.' && at > 0)
            .map(|at| name[..at].to_ascii_lowercase());
        Ok(match bucket {
            Some(bucket) => VirtualHost::new(self.domain.as_str()).with_bucket(bucket),
            None => VirtualHost::new(name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_of(host: &str) -> Option<String> {
        let h = BucketSubdomains::new("s3.example.test").unwrap();
        h.parse_host_header(host).unwrap().bucket().map(str::to_owned)
    }

    #[test]
    fn subdomains_name_buckets_and_everything_else_is_path_style() {
        assert_eq!(bucket_of("photos.s3.example.test").as_deref(), Some("photos"));
        assert_eq!(bucket_of("photos.s3.example.test:9000").as_deref(), Some("photos"));
        assert_eq!(bucket_of("My.Bucket.S3.Example.Test").as_deref(), Some("my.bucket"));
        assert_eq!(bucket_of("s3.example.test:9000"), None);
        assert_eq!(bucket_of("localhost:9000"), None);
        assert_eq!(bucket_of("evils3.example.test"), None);
        assert_eq!(bucket_of(".s3.example.test"), None);
        assert!(BucketSubdomains::new("bad_domain").is_err());
    }
}
