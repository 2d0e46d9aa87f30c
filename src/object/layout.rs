//! Where objects live in the backend: the "Object layout" of docs/FORMATS.md, which this
//! module follows exactly.
//!
//! Every S3 key (1–1024 bytes of UTF-8, any characters) maps to one location and back,
//! so two keys are never one file, and nothing of sealstore's own — upload parts,
//! temporary files — shares a name with any key:
//!
//! ```text
//! _buckets/<bucket>/objects/<xx>/<name>        an object (layout 2)
//! _buckets/<bucket>/uploads/<upload id>/<nnnnn>  a part of a multipart upload in progress
//! <bucket>/<object_store path of the key>      an object written before layout 2 (read only)
//! ```
//!
//! `<xx>` is the first byte of the key's SHA-256 in hex (256 folders, so that concurrent
//! writes do not all wait on one directory's lock), and `<name>` is the key with every byte
//! outside `A–Z a–z 0–9 - _ .` written `!XX` (upper-case hex), cut into path segments of at most [`SEGMENT`] characters (never inside an `!XX`),
//! the last one followed by `!`. Segments are therefore never empty, `.` or `..`, at most
//! 201 bytes (under every filesystem's 255-byte limit, with room for the `#n` of a local
//! temporary file); a file's name ends with `!` and a directory's never does, so no name is
//! both. Only characters AWS lists as safe in object names are used.

use object_store::path::Path;

use super::format::ObjectIdentity;

/// The top-level folder holding every bucket in layout 2. No bucket name starts with `_`,
/// so it never meets a bucket folder of layout 1.
pub const BUCKETS_ROOT: &str = "_buckets";
/// A bucket's objects, under its root.
pub const OBJECTS: &str = "objects";
/// A bucket's multipart uploads in progress, under its root.
pub const UPLOADS: &str = "uploads";
/// Characters of an encoded key per path segment.
pub const SEGMENT: usize = 200;
/// Starts an escaped byte, and ends the last segment of every object name.
pub const ESCAPE: char = '!';
/// The longest encoded key that is its own name. S3-compatible stores take keys of at most
/// 1024 bytes, the backend's own prefix and `_buckets/<bucket>/objects/` included: longer
/// encodings are named by their hash ([`HASHED`]).
pub const NAME_MAX: usize = 600;
/// Starts the name of an object whose encoded key is longer than [`NAME_MAX`]: `!H`, the
/// lower-case hex SHA-256 of the key, `!`. No encoded key starts so (`H` is no hex digit).
pub const HASHED: &str = "!H";

/// A bucket's folder in layout 2, relative to the backend's root.
pub fn bucket_root(bucket: &str) -> Path {
    Path::from_iter([BUCKETS_ROOT, bucket])
}

fn keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Where `key` lives, relative to its bucket's root.
pub fn object_location(key: &str) -> Path {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let fan_out = data_encoding::HEXLOWER.encode(&digest.as_ref()[..1]);
    let encoded_len: usize = key.bytes().map(|b| if keeps(b) { 1 } else { 3 }).sum();
    if encoded_len > NAME_MAX {
        let hex = data_encoding::HEXLOWER.encode(digest.as_ref());
        return Path::parse(format!("{OBJECTS}/{fan_out}/{HASHED}{hex}{ESCAPE}"))
            .expect("hashed names are valid paths");
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut name = String::with_capacity(OBJECTS.len() + key.len() + 20);
    name.push_str(OBJECTS);
    name.push('/');
    name.push_str(&fan_out);
    name.push('/');
    let mut segment = 0;
    for &b in key.as_bytes() {
        let width = if keeps(b) { 1 } else { 3 };
        if segment + width > SEGMENT {
            name.push('/');
            segment = 0;
        }
        if keeps(b) {
            name.push(b as char);
        } else {
            name.push(ESCAPE);
            name.push(HEX[usize::from(b >> 4)] as char);
            name.push(HEX[usize::from(b & 15)] as char);
        }
        segment += width;
    }
    name.push(ESCAPE);
    // Every segment is a valid path part (no control character, never empty, `.` or `..`)
    // and is kept as it is.
    Path::parse(name).expect("object names are valid paths")
}

/// Whether `location` (relative to the bucket's root) is the hashed name of a long key,
/// whose key only the index knows.
pub fn is_hashed(location: &Path) -> bool {
    let parts: Vec<_> = location.parts().collect();
    matches!(parts.as_slice(), [objects, _, name] if objects.as_ref() == OBJECTS && name.as_ref().starts_with(HASHED))
}

/// The key stored at `location` (relative to the bucket's root), when it is an object's
/// name spelling out its key (not a [hashed](is_hashed) one).
pub fn key_of(location: &Path) -> Option<String> {
    let mut parts = location.parts();
    if parts.next()?.as_ref() != OBJECTS {
        return None;
    }
    parts.next()?; // the fan-out folder, checked with the whole spelling below
    let mut encoded = String::new();
    for part in parts {
        encoded.push_str(part.as_ref());
    }
    let encoded = encoded.strip_suffix(ESCAPE)?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut input = encoded.bytes();
    while let Some(b) = input.next() {
        match b {
            b'!' => {
                let hi = (input.next()? as char).to_digit(16)?;
                let lo = (input.next()? as char).to_digit(16)?;
                bytes.push((hi * 16 + lo) as u8);
            }
            b if keeps(b) => bytes.push(b),
            _ => return None,
        }
    }
    let key = String::from_utf8(bytes).ok().filter(|k| !k.is_empty())?;
    // Only the canonical spelling is a name (upper-case hex, kept bytes unescaped, segments
    // cut where the encoding cuts them).
    (object_location(&key) == *location).then_some(key)
}

/// The folder of one multipart upload's parts, relative to the bucket's root.
pub fn upload_folder(upload_id: &str) -> Path {
    Path::from_iter([UPLOADS, upload_id])
}

/// Where part `number` of upload `upload_id` is kept, relative to the bucket's root.
pub fn part_location(upload_id: &str, number: u32) -> Path {
    Path::from_iter([UPLOADS.to_owned(), upload_id.to_owned(), format!("{number:05}")])
}

/// The upload id and part number of a part's location.
pub fn part_of(location: &Path) -> Option<(String, u32)> {
    let parts: Vec<_> = location.parts().collect();
    match parts.as_slice() {
        [uploads, id, number] if uploads.as_ref() == UPLOADS && number.as_ref().len() == 5 => {
            Some((id.as_ref().to_owned(), number.as_ref().parse().ok()?))
        }
        _ => None,
    }
}

/// The upload id of anything under an upload's folder.
pub fn upload_of(location: &Path) -> Option<String> {
    let mut parts = location.parts();
    (parts.next()?.as_ref() == UPLOADS).then_some(())?;
    Some(parts.next()?.as_ref().to_owned())
}

/// The identity sealed into what lives at `location` of `bucket`'s layout-2 folder, when
/// the location tells: an object named by its key is its key's (version `null`); a part's
/// key is empty (no S3 key is) and its version names the upload and the part, so a part can
/// never pass for an object. (An object with a hashed name is its key's too; the key comes
/// from the index.)
pub fn identity_of(bucket: &str, location: &Path) -> Option<ObjectIdentity> {
    if let Some(key) = key_of(location) {
        return Some(ObjectIdentity::unversioned(bucket, key));
    }
    let (upload_id, number) = part_of(location)?;
    Some(ObjectIdentity {
        bucket: bucket.to_owned(),
        key: String::new(),
        version_id: format!("upload {upload_id} part {number}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_one_to_one_and_back() {
        let long_segment = "s".repeat(300);
        let longest_named = "k".repeat(NAME_MAX);
        let escaped_named = "日".repeat(NAME_MAX / 9);
        let keys = [
            "x//y",
            "x/y",
            "/lead",
            "lead",
            "trail/",
            "trail",
            "a/b/",
            "a/b",
            ".",
            "..",
            "a/./b",
            "a/../b",
            "%",
            "%25",
            "!",
            "!2F",
            "!21",
            "~",
            "name#1",
            "tab\there",
            "\u{1}\u{7f}",
            "é",
            ".sealstore-uploads/abc/00001",
            "uploads/abc/00001",
            long_segment.as_str(),
            longest_named.as_str(),
            escaped_named.as_str(),
        ];
        let mut seen = std::collections::HashSet::new();
        for key in keys {
            let location = object_location(key);
            assert!(seen.insert(location.clone()), "{key:?} shares {location}");
            assert_eq!(key_of(&location).as_deref(), Some(key), "{location}");
            for part in location.parts() {
                let part = part.as_ref();
                assert!(!part.is_empty() && part != "." && part != "..");
                assert!(part.len() <= SEGMENT + 1, "{} bytes", part.len());
            }
            // A file is never a directory of another key's name.
            let parts: Vec<_> = location.parts().collect();
            for dir in &parts[..parts.len() - 1] {
                assert!(!dir.as_ref().ends_with(ESCAPE), "{location}");
            }
            assert!(parts.last().unwrap().as_ref().ends_with(ESCAPE));
            assert_eq!(part_of(&location), None);
        }
    }

    #[test]
    fn parts_are_not_objects() {
        let part = part_location("0123abcd", 7);
        assert_eq!(part.as_ref(), "uploads/0123abcd/00007");
        assert_eq!(part_of(&part), Some(("0123abcd".into(), 7)));
        assert_eq!(key_of(&part), None);
        let identity = identity_of("b", &part).unwrap();
        assert_eq!(identity.key, "");
        assert_ne!(
            identity,
            identity_of("b", &object_location("uploads/0123abcd/00007")).unwrap()
        );
        // Non-canonical spellings are nobody's name.
        assert_eq!(key_of(&Path::parse("objects/58/!2f!").unwrap()), None);
        assert_eq!(key_of(&Path::parse("objects/58/a!/b!").unwrap()), None);
        assert_eq!(key_of(&Path::parse("objects/58/a").unwrap()), None);
        assert_eq!(
            key_of(&Path::parse("objects/00/photos!2Fa.jpg!").unwrap()),
            None,
            "the wrong fan-out folder"
        );
        assert_eq!(
            key_of(&Path::parse("objects/e3/!").unwrap()),
            None,
            "the empty key is no S3 key"
        );
        assert_eq!(object_location("photos/a.jpg").as_ref(), "objects/58/photos!2Fa.jpg!");
    }

    #[test]
    fn long_keys_are_named_by_their_hash() {
        let long = "k".repeat(NAME_MAX + 1);
        let location = object_location(&long);
        assert!(is_hashed(&location));
        assert_eq!(location.as_ref().len(), "objects/xx/!H".len() + 64 + 1);
        assert_eq!(key_of(&location), None);
        assert_ne!(location, object_location(&"k".repeat(NAME_MAX + 2)));
        assert!(!is_hashed(&object_location(&"k".repeat(NAME_MAX))));
        // 1024 bytes that all need escaping: still a short name.
        assert!(object_location(&"\u{1}".repeat(1024)).as_ref().len() < 100);
    }
}
