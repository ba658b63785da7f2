//! The service's partition-key hash: Bob Jenkins' lookup3 `hashlittle2` folded to 16 bits
//! (reference §12).

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// lookup3 `hashlittle2` with both seeds 0: returns (hash1 = c, hash2 = b).
fn hashlittle2(data: &[u8]) -> (u32, u32) {
    let init = 0xdead_beef_u32.wrapping_add(data.len() as u32);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut rest = data;
    while rest.len() > 12 {
        let w = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        a = a.wrapping_add(w(0));
        b = b.wrapping_add(w(4));
        c = c.wrapping_add(w(8));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return (c, b);
    }
    for (k, &byte) in rest.iter().enumerate() {
        let v = u32::from(byte) << (8 * (k % 4));
        match k / 4 {
            0 => a = a.wrapping_add(v),
            1 => b = b.wrapping_add(v),
            _ => c = c.wrapping_add(v),
        }
    }
    final_mix(&mut a, &mut b, &mut c);
    (c, b)
}

/// The signed 16-bit hash of a partition key, as the service computes it.
pub fn partition_key_hash(key: &str) -> i16 {
    let (h1, h2) = hashlittle2(key.as_bytes());
    (h1 ^ h2) as u16 as i16
}

/// The partition index a key maps to among `partition_count` partitions.
pub fn partition_for_key(key: &str, partition_count: u32) -> u32 {
    assert!(partition_count > 0, "a hub has at least one partition");
    let h = i32::from(partition_key_hash(key));
    (h % partition_count as i32).unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotnet_and_rust_sdk_vectors() {
        for (k, h) in [
            ("7", -15263),
            ("131", 30562),
            ("7149583486996073602", 12977),
            ("FWfAT", -22341),
            ("sOdeEAsyQoEuEFPGerWO", -6503),
            ("!c*_!I@1^c", 15372),
            ("p4*!jioeO/z-!-;w:dh", -3104),
            ("$0cb", 26269),
            ("-4189260826195535198", 453),
        ] {
            assert_eq!(partition_key_hash(k), h, "{k}");
        }
    }

    #[test]
    fn reference_vectors_with_partition_indexes() {
        for (k, c, b, h, n2, n4, n32) in [
            ("", 0xdeadbeef_u32, 0xdeadbeef_u32, 0, 0, 0, 0),
            ("a", 0x58d68708, 0x582647ac, -16220, 0, 0, 28),
            ("abc", 0x0e397631, 0x3c03be9e, -14161, 1, 1, 17),
            ("abcd", 0xb5f4889c, 0xe20dd3fa, 23398, 0, 2, 6),
            ("abcdefghijkl", 0x4012f87b, 0x75b50ec0, -2373, 1, 1, 5),
            ("abcdefghijklm", 0x928128f9, 0x0f04ab68, -31855, 1, 3, 15),
            ("some-key", 0x9be7f937, 0xb3e5b281, 19382, 0, 2, 22),
            ("héllo", 0x1f1e1e31, 0x55e75ca0, 17041, 1, 1, 17),
        ] {
            assert_eq!(hashlittle2(k.as_bytes()), (c, b), "{k}");
            assert_eq!(partition_key_hash(k), h, "{k}");
            assert_eq!(partition_for_key(k, 2), n2, "{k}");
            assert_eq!(partition_for_key(k, 4), n4, "{k}");
            assert_eq!(partition_for_key(k, 32), n32, "{k}");
        }
        assert_eq!(partition_for_key("7", 4), 3);
        assert_eq!(partition_for_key("7", 32), 31);
    }
}
