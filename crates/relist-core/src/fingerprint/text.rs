//! Text fingerprints for marketplace titles.
//!
//! Sellers re-list taken-down items with lightly edited titles ("BAJU BEKAS
//! IMPORT ORI!!" -> "b4ju bekas imp0rt original 🔥 READY"). [`normalize`]
//! undoes the cheap edits (case, emoji, punctuation, leetspeak, spaced
//! letters, repeated letters, chat abbreviations) and [`simhash`] turns what is
//! left into a 64-bit locality-sensitive hash so near-identical titles land a
//! small [`hamming`] distance apart.
//!
//! Every output of this module is stored, so it must be stable across Rust
//! releases and platforms: features are hashed with xxh3 (a fixed spec), all
//! weights are integers, and no hash-map iteration order is involved. Any
//! change of output must bump [`TEXT_FINGERPRINT_VERSION`].

use std::sync::OnceLock;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Version of the normalisation + feature scheme; bump on any change of output (stored title
/// simhashes are recomputed from the stored titles by the store's schema upgrade).
///
/// - 1: words and character 3-grams; digits read as letters only in tokens of 3+ letters.
/// - 2: character 3-grams only; digits read as letters in any token with a letter.
pub const TEXT_FINGERPRINT_VERSION: u32 = 2;

/// Words sellers add or remove freely to game search; they say nothing about
/// the item, so they take no part in the simhash (they still appear in
/// [`normalize`] output). Collapsed like titles before use.
const NOISE_WORDS: &[&str] = &[
    "ready",
    "stock",
    "stok",
    "readystock",
    "promo",
    "cod",
    "best",
    "seller",
    "bestseller",
    "ori",
    "original",
    "murah",
    "termurah",
    "sale",
    "bigsale",
    "diskon",
    "disc",
    "discount",
    "gratis",
    "ongkir",
    "free",
    "freeongkir",
    "hot",
    "new",
    "terlaris",
    "laris",
    "limited",
    "flash",
    "viral",
    "trending",
    "hits",
    "kekinian",
    "official",
    "asli",
    "premium",
    "quality",
    "rekomended",
    "recommended",
    "obral",
    "termurahh",
];

/// Indonesian chat abbreviations -> full word. Keys and values are passed
/// through the same letter-run collapsing as titles before use, so entries
/// may be written in their natural spelling.
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("yg", "yang"),
    ("bgt", "banget"),
    ("bngt", "banget"),
    ("dgn", "dengan"),
    ("dg", "dengan"),
    ("utk", "untuk"),
    ("tdk", "tidak"),
    ("gak", "tidak"),
    ("ga", "tidak"),
    ("gk", "tidak"),
    ("nggak", "tidak"),
    ("ngga", "tidak"),
    ("enggak", "tidak"),
    ("sdh", "sudah"),
    ("udh", "sudah"),
    ("udah", "sudah"),
    ("blm", "belum"),
    ("jg", "juga"),
    ("krn", "karena"),
    ("karna", "karena"),
    ("bs", "bisa"),
    ("sm", "sama"),
    ("aja", "saja"),
    ("brg", "barang"),
    ("dr", "dari"),
    ("dri", "dari"),
    ("tp", "tapi"),
    ("sy", "saya"),
    ("bnyk", "banyak"),
    ("byk", "banyak"),
    ("hrg", "harga"),
    ("jd", "jadi"),
    ("msh", "masih"),
    ("pke", "pakai"),
    ("pake", "pakai"),
    ("skrg", "sekarang"),
    ("sblm", "sebelum"),
    ("dlm", "dalam"),
    ("kalo", "kalau"),
    ("klo", "kalau"),
    ("tgl", "tanggal"),
    ("hrs", "harus"),
    ("dpt", "dapat"),
    ("bkn", "bukan"),
    ("trs", "terus"),
    ("lbh", "lebih"),
    ("sgt", "sangat"),
    ("bsa", "bisa"),
    ("cm", "cuma"),
    ("tnp", "tanpa"),
];

/// Canonical form of a title: what a person would still read as the same words.
///
/// Steps, in order: strip invisible format characters and combining marks
/// (zalgo / strike-through tricks), NFKC (fullwidth and "math bold" letters),
/// lowercase, `@`/`$` used as letters, everything else non-alphanumeric to a
/// space, digits used as letters (`b4ju`, `imp0rt`; sizes like `500ml`, `4x6`
/// stay), runs of >= 3 single letters joined (`b a j u`), repeated letters
/// collapsed (`baaaju`), chat abbreviations expanded (`yg` -> `yang`).
/// Tokens are joined by single spaces.
pub fn normalize(text: &str) -> String {
    normalized_tokens(text).join(" ")
}

/// 64-bit simhash of the normalized title over character 3-grams of its words; None when
/// nothing is left after normalisation.
///
/// Takes raw text and normalises internally. Promo/noise words are dropped
/// first so adding "READY STOCK COD" does not move the hash.
pub fn simhash(text: &str) -> Option<u64> {
    simhash_tokens(&normalized_tokens(text))
}

/// [`normalize`] and [`simhash`] of one title, normalising it once (both are stored).
pub fn fingerprint(text: &str) -> (String, Option<u64>) {
    let tokens = normalized_tokens(text);
    let simhash = simhash_tokens(&tokens);
    (tokens.join(" "), simhash)
}

/// Number of differing bits between two simhashes.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Length of the character shingles. Measured on real Shopee titles with synthetic re-listing
/// edits: padded 3-grams alone hold a one-letter typo within 16 bits for 99.6% of titles;
/// adding whole words (weight 2 beside 3 per 3-gram, TEXT_FINGERPRINT_VERSION 1) cost typo
/// recall (98.4%) and bought no precision over 1.1 million cross-listing pairs; 2-grams
/// matched ten times more unrelated pairs, 4-grams kept 92% of the typos.
const SHINGLE: usize = 3;

const SEED_CHAR: u64 = 0x7265_6c69_7374_0003;

/// Simhash over already-normalised tokens: each distinct character 3-gram of each word,
/// padded with start/end markers, votes once.
fn simhash_tokens(tokens: &[String]) -> Option<u64> {
    let words: Vec<&str> = tokens.iter().map(String::as_str).filter(|t| !is_noise(t)).collect();
    // A title made only of promo words still deserves a fingerprint.
    let words: Vec<&str> = if words.is_empty() {
        tokens.iter().map(String::as_str).collect()
    } else {
        words
    };
    if words.is_empty() {
        return None;
    }

    let mut feats: Vec<u64> = Vec::new();
    for w in &words {
        let mut cs = Vec::with_capacity(w.len() + 2);
        cs.push('\u{2}');
        cs.extend(w.chars());
        cs.push('\u{3}');
        if cs.len() <= SHINGLE {
            feats.push(hash_chars(&cs));
        } else {
            feats.extend(cs.windows(SHINGLE).map(hash_chars));
        }
    }

    // Each distinct feature votes once, so a seller repeating a word does not drag the hash;
    // sorting makes the vote independent of feature order.
    feats.sort_unstable();
    feats.dedup();
    let mut votes = [0i64; 64];
    for h in feats {
        for (bit, v) in votes.iter_mut().enumerate() {
            if (h >> bit) & 1 == 1 {
                *v += 1;
            } else {
                *v -= 1;
            }
        }
    }
    let mut out = 0u64;
    for (bit, v) in votes.iter().enumerate() {
        if *v > 0 {
            out |= 1 << bit;
        }
    }
    Some(out)
}

fn hash_chars(cs: &[char]) -> u64 {
    let mut buf = [0u8; 4];
    let mut bytes = Vec::with_capacity(cs.len() * 2);
    for c in cs {
        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    xxh3_64_with_seed(&bytes, SEED_CHAR)
}

fn is_noise(word: &str) -> bool {
    noise_set().binary_search_by(|w| w.as_str().cmp(word)).is_ok()
}

fn noise_set() -> &'static Vec<String> {
    static SET: OnceLock<Vec<String>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut v: Vec<String> = NOISE_WORDS.iter().map(|w| collapse_runs(w)).collect();
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// Abbreviation table with keys and values collapsed like titles are, sorted
/// by key for binary search.
fn abbreviations() -> &'static Vec<(String, String)> {
    static TABLE: OnceLock<Vec<(String, String)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut v: Vec<(String, String)> = ABBREVIATIONS
            .iter()
            .map(|(k, v)| (collapse_runs(k), collapse_runs(v)))
            .collect();
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        v
    })
}

/// Zero-width and other invisible characters that sellers can slip inside a
/// word; removed outright so they do not split it.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

fn leet(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' => 'i',
        '3' => 'e',
        '4' => 'a',
        '5' => 's',
        '7' => 't',
        _ => return None,
    })
}

fn normalized_tokens(text: &str) -> Vec<String> {
    // 1. Unicode: drop invisibles and combining marks, then NFKC + lowercase.
    let stripped: String = text
        .nfkd()
        .filter(|&c| !is_invisible(c) && !is_combining_mark(c))
        .collect();
    let lowered: Vec<char> = stripped.nfkc().flat_map(char::to_lowercase).collect();

    // 2. '@' and '$' next to a letter are letters; apostrophes between
    //    letters vanish ("syar'i" == "syari"); the rest of non-alphanumerics
    //    separate tokens.
    let is_letter_at = |i: Option<usize>| i.and_then(|i| lowered.get(i)).is_some_and(|c| c.is_alphabetic());
    let mut cleaned = String::with_capacity(lowered.len());
    for (i, &c) in lowered.iter().enumerate() {
        let near_letter = is_letter_at(i.checked_sub(1)) || is_letter_at(Some(i + 1));
        let between_letters = is_letter_at(i.checked_sub(1)) && is_letter_at(Some(i + 1));
        match c {
            '@' if near_letter => cleaned.push('a'),
            '$' if near_letter => cleaned.push('s'),
            '\'' | '\u{2019}' | '\u{2018}' | '`' | '\u{B4}' if between_letters => {}
            c if c.is_alphanumeric() => cleaned.push(c),
            _ => cleaned.push(' '),
        }
    }

    // 3. Digits used as letters, per token.
    let tokens: Vec<String> = cleaned.split_whitespace().map(deleet).collect();

    // 4. Join runs of >= 3 single-letter tokens ("b a j u").
    let mut joined: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let single = |t: &String| {
            let mut cs = t.chars();
            matches!((cs.next(), cs.next()), (Some(c), None) if c.is_alphabetic())
        };
        let mut j = i;
        while j < tokens.len() && single(&tokens[j]) {
            j += 1;
        }
        if j - i >= 3 {
            joined.push(tokens[i..j].concat());
            i = j;
        } else {
            joined.push(tokens[i].clone());
            i += 1;
        }
    }

    // 5. Collapse repeated letters, 6. expand abbreviations.
    let table = abbreviations();
    joined
        .into_iter()
        .map(|t| {
            let t = collapse_runs(&t);
            match table.binary_search_by(|(k, _)| k.as_str().cmp(&t)) {
                Ok(i) => table[i].1.clone(),
                Err(_) => t,
            }
        })
        .collect()
}

/// Digits a seller typed for letters, read back as letters: 0 1 3 4 5 7 -> o i e a s t.
///
/// In a token with a letter whose digit runs are all short (1-2 digits) and all of those
/// digits, every digit is read as a letter: "b4ju", "k40s", "pr14", "0pp0", and also model
/// codes ("a50s" -> "asos"), which is harmless because both sides of a comparison are read
/// the same way and different codes stay different ("a30s" -> "aeos"). Otherwise only runs
/// between letters and single digits at an end are ("1mp0rt2023" -> "import2023"). Left
/// alone: numbers ("2023", "36"), runs of 3+ digits and tokens with 2, 6, 8 or 9 (rare as
/// letters, common in sizes and model numbers: "500ml", "4x6", "hk900", "m21").
fn deleet(token: &str) -> String {
    let cs: Vec<char> = token.chars().collect();
    let n = cs.len();
    if !cs.iter().any(char::is_ascii_digit) || !cs.iter().any(|c| c.is_alphabetic()) {
        return token.to_string();
    }
    // Maximal digit runs as half-open ranges.
    let mut runs = Vec::new();
    let mut i = 0;
    while i < n {
        if cs[i].is_ascii_digit() {
            let s = i;
            while i < n && cs[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((s, i));
        } else {
            i += 1;
        }
    }
    let letter = |i: usize| cs.get(i).is_some_and(|c| c.is_alphabetic());
    let mappable = |s: usize, e: usize| e - s <= 2 && cs[s..e].iter().all(|&c| leet(c).is_some());
    let inner = |&(s, e): &(usize, usize)| mappable(s, e) && s > 0 && letter(s - 1) && letter(e);
    let all = runs.iter().all(|&(s, e)| mappable(s, e));
    if !all && !runs.iter().any(inner) {
        return token.to_string();
    }
    let mut out = cs.clone();
    for &(s, e) in &runs {
        let edge = e - s == 1 && ((s == 0 && letter(e)) || (e == n && s > 0 && letter(s - 1)));
        if all || inner(&(s, e)) || (edge && mappable(s, e)) {
            for c in &mut out[s..e] {
                *c = leet(*c).unwrap_or(*c);
            }
        }
    }
    out.into_iter().collect()
}

/// Runs of the same letter become one letter ("baaaju" -> "baju"); digits are
/// untouched. Clothing sizes made of x's ("xxl", "xxxl") are kept as they are.
fn collapse_runs(token: &str) -> String {
    let is_x_size = token.len() >= 3
        && token.starts_with("xx")
        && token.ends_with(['l', 's'])
        && token[..token.len() - 1].bytes().all(|b| b == b'x');
    if is_x_size {
        return token.to_string();
    }
    let mut out = String::with_capacity(token.len());
    let mut prev: Option<char> = None;
    for c in token.chars() {
        if c.is_alphabetic() && prev == Some(c) {
            continue;
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy's default `text_support` (16): the distance within which a title counts.
    const REVIEW: u32 = 16;

    #[test]
    fn review_distance_is_the_policy_default() {
        assert_eq!(crate::policy::Thresholds::default().text_support, REVIEW);
    }

    fn dist(a: &str, b: &str) -> u32 {
        hamming(simhash(a).unwrap(), simhash(b).unwrap())
    }

    #[test]
    fn normalize_golden() {
        let cases = [
            ("BAJU BEKAS IMPORT ORI!!", "baju bekas import ori"),
            (
                "b4ju bekas imp0rt original 🔥 READY",
                "baju bekas import original ready",
            ),
            ("b a j u", "baju"),
            ("Kaos 500ml 2023 XL 4x6", "kaos 500ml 2023 xl 4x6"),
            ("🔥🔥✅💯", ""),
            ("", ""),
            ("ＢＡＪＵ\u{3000}ＢＥＫＡＳ", "baju bekas"),
            ("baaaaju b@ju $epatu harga $100", "baju baju sepatu harga 100"),
            (
                "brg bgt murah yg ori gak nyesel",
                "barang banget murah yang ori tidak nyesel",
            ),
            ("Kaos Polos XXL xxxl 36 A50s HK900", "kaos polos xxl xxxl 36 asos hk900"),
            (
                "0r1g1n4l syar'i b\u{200b}aju c\u{301}afe\u{336}",
                "original syari baju cafe",
            ),
            ("𝐁𝐀𝐉𝐔 𝐁𝐄𝐊𝐀𝐒 Ⓑⓐⓙⓤ", "baju bekas baju"),
            ("B.A.J.U / kaos", "baju kaos"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "input {input:?}");
        }
    }

    #[test]
    fn abbreviation_table_is_collapsed_consistently() {
        // "nggak" collapses to "ngak" before lookup; the table is collapsed too.
        assert_eq!(normalize("nggak"), "tidak");
        assert_eq!(normalize("NGGGAAAK"), "tidak");
        // Values are collapsed like any title word.
        assert_eq!(normalize("tgl"), normalize("tanggal"));
    }

    #[test]
    fn simhash_golden() {
        // Pinned: a change here changes stored fingerprints, so bump
        // TEXT_FINGERPRINT_VERSION together with these literals.
        let cases = [
            ("BAJU BEKAS IMPORT ORI!!", 0x6ceb_eb93_a288_8bad_u64),
            ("Kaos Polos Hitam Combed 30s", 0x51d9_d7e0_e356_8556),
            ("LEVANTO - Jeans Pria Slim Fit 511- 512 STRETCH", 0xf3f4_b79c_9d3c_a846),
            (
                "Gunting Rambut Elektrik / Kemei / KM900 / Alat cukur Rambut",
                0x8804_04ca_0442_ccad,
            ),
            ("Sabun Cuci Tangan Antiseptik Refill 450ml POUCH", 0x3b3c_b278_c166_f9ed),
            ("READY PROMO COD", 0x9f30_5d95_b490_98e2),
        ];
        for (input, want) in cases {
            assert_eq!(simhash(input), Some(want), "input {input:?}");
        }
        assert_eq!(TEXT_FINGERPRINT_VERSION, 2);
    }

    #[test]
    fn fingerprint_is_normalize_and_simhash() {
        for t in ["b4ju bekas imp0rt ORI!!", "", "🔥 READY"] {
            assert_eq!(fingerprint(t), (normalize(t), simhash(t)), "{t:?}");
        }
    }

    #[test]
    fn nothing_left_is_none() {
        assert_eq!(simhash(""), None);
        assert_eq!(simhash("🔥🔥 !!! ✅ --- "), None);
        assert_eq!(simhash("\u{200b}\u{301}"), None);
    }

    #[test]
    fn relisting_edits_stay_close() {
        let base = "BAJU BEKAS IMPORT ORI!!";
        let edited = [
            "b4ju bekas imp0rt original 🔥 READY",
            "baju bekas import",
            "BEKAS BAJU IMPORT ORI",
            "b a j u bekas import ori",
            "🔥🔥 BAJU BEKAS IMPORT ORI 🔥 READY STOCK COD",
            "BAJU BEKAS IMPORRT ORI!!",
            "baaajuuu bekas import ori",
        ];
        for e in edited {
            assert!(dist(base, e) <= REVIEW, "{e:?}: {}", dist(base, e));
        }
        let base = "Daster Batik Anak Tanpa Lengan / Baju Anak Perempuan Murah";
        let edited = [
            "daster batik anak tnp lengan baju anak perempuan",
            "DASTER BATIK ANAK TANPA LENGAN - BAJU ANAK PEREMPUAN ✅ PROMO",
            "Baju Anak Perempuan / Daster Batik Anak Tanpa Lengan",
            "Daster Batik Anak Tanpa Lengan / Baju Anak Prempuan Murah",
            "D4ster B4tik Anak Tanpa Lengan Baju Anak Perempuan",
        ];
        for e in edited {
            assert!(dist(base, e) <= REVIEW, "{e:?}: {}", dist(base, e));
        }
    }

    #[test]
    fn unrelated_titles_are_far() {
        let titles = [
            "BAJU BEKAS IMPORT ORI!!",
            "Sabun Cuci Tangan Antiseptik Refill 450ml POUCH",
            "LEVANTO - Jeans Pria Slim Fit 511- 512 STRETCH",
            "Gunting Rambut Elektrik / Kemei / KM900 / Alat cukur Rambut",
            "Mie Instan Rasa Soto Ayam Pedas Gurih",
            "Sepatu Boots Safety Pria Caterpillar Holton Ujungbesi",
        ];
        for (i, a) in titles.iter().enumerate() {
            for b in &titles[i + 1..] {
                assert!(dist(a, b) > REVIEW + 5, "{a:?} vs {b:?}: {}", dist(a, b));
            }
        }
    }

    #[test]
    fn numbers_and_sizes_are_not_leetspeak() {
        for t in ["500ml", "2023", "xl", "4x6", "36", "hk900", "s0073", "m21", "2in1"] {
            assert_eq!(normalize(t), t);
        }
        assert_eq!(
            normalize("s3patu imp0rt k4os 1mp0rt2023"),
            "sepatu import kaos import2023"
        );
        // Short digit runs in a word are read as letters, model codes included; both sides of
        // a comparison read them the same way and different codes stay different.
        assert_eq!(
            normalize("k40s pr14 0pp0 4p4 a50s a30s 30s"),
            "kaos pria opo apa asos aeos eos"
        );
    }

    #[test]
    fn simhash_never_panics_on_arbitrary_input() {
        let pool: Vec<char> = [
            '\0',
            '\u{1}',
            '\n',
            '\t',
            '\u{7f}',
            '\u{85}',
            ' ',
            'a',
            'Z',
            '4',
            '0',
            '@',
            '$',
            '\'',
            '\u{301}',
            '\u{336}',
            '\u{200b}',
            '\u{200d}',
            '\u{feff}',
            '\u{fe0f}',
            'ß',
            'İ',
            'ﬁ',
            'ǅ',
            'Ⅻ',
            '①',
            '٣',
            'ا',
            '\u{202e}',
            '中',
            '🔥',
            '👨',
            '\u{1f3fb}',
            '\u{e0001}',
            '\u{10ffff}',
            '\u{fffd}',
            'ｂ',
            '𝐁',
            'ㅤ',
            '\u{3164}',
        ]
        .to_vec();
        let mut state: u64 = 0x1234_5678;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for len in [0usize, 1, 2, 3, 7, 50, 300, 10_000] {
            for _ in 0..20 {
                let s: String = (0..len).map(|_| pool[next() % pool.len()]).collect();
                let h = simhash(&s);
                assert_eq!(h, simhash(&s), "deterministic");
                assert_eq!(h.is_none(), normalize(&s).is_empty());
            }
        }
        let long = "b4ju bekas ".repeat(1000);
        assert!(simhash(&long).is_some());
        let marks = format!("a{}", "\u{301}".repeat(10_000));
        assert_eq!(normalize(&marks), "a");
    }

    #[test]
    fn hamming_counts_bits() {
        assert_eq!(hamming(0, 0), 0);
        assert_eq!(hamming(0, u64::MAX), 64);
        assert_eq!(hamming(0b1010, 0b0110), 2);
    }
}
