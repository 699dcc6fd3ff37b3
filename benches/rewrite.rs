//! `linkedge rewrite` on a 100 KB marketing email with 40 links (table layout, an Outlook VML
//! button in a conditional comment, `&amp;` in query strings): `cargo bench --bench rewrite`.

use criterion::{Criterion, criterion_group, criterion_main};
use linkedge::mint::{Minter, Standing, Unregistered};
use linkedge::rewrite::{Options, rewrite};
use linkedge::token::{Keyring, Secret};
use std::hint::black_box;

/// About 100 KB of HTML with 40 links, 39 of them tracked (one `mailto:`).
fn email() -> String {
    let mut doc = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Winter sale</title>\
         <style>body{margin:0}a{color:#1a73e8}</style></head><body>\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\">",
    );
    let words = "Soft merino wool, knitted in Scotland, warm without weight and kind to skin. ";
    for i in 0..38 {
        doc.push_str(&format!(
            "<tr><td style=\"padding:16px 24px;font-family:Arial,sans-serif;font-size:14px;\
             line-height:20px;color:#333333;\"><img src=\"https://cdn.example.com/p/{i}.jpg\" \
             width=\"260\" height=\"260\" alt=\"Product {i}\" style=\"display:block;border:0;\" />\
             <h2 style=\"margin:12px 0;\">Product {i}</h2><p>{}</p>\
             <a href=\"https://shop.example.com/p/{i}?utm_source=newsletter&amp;utm_medium=email\
             &amp;utm_campaign=winter&amp;utm_content=product-{i}\" style=\"color:#1a73e8;\">Shop \
             product {i}</a></td></tr>",
            words.repeat(28)
        ));
    }
    doc.push_str(
        "<tr><td><!--[if mso]><v:roundrect href=\"https://shop.example.com/sale\" \
         style=\"height:48px;width:240px;\" fillcolor=\"#1a73e8\"><center>Shop</center>\
         </v:roundrect><![endif]--><a href=\"https://shop.example.com/sale\">Shop</a> \
         <a href=\"mailto:help@example.com\">Help</a></td></tr></table></body></html>",
    );
    doc
}

fn bench(c: &mut Criterion) {
    let key = Secret::new(b"bench-key-1-not-a-secret-0123456789".to_vec()).unwrap();
    let minter = Minter::new(
        Keyring::new(vec![(1, key)], 1).unwrap(),
        "https",
        Unregistered::Refuse,
    );
    let doc = email();
    let opts = Options {
        host: "link.example.com".into(),
        workspace: 4242,
        message: 123_456_789_012,
        text: false,
        pixel: true,
        issued: 1_790_000_000,
    };
    let done = rewrite(&minter, &Standing::Active, &opts, doc.as_bytes()).unwrap();
    assert_eq!((done.report.len(), done.tracked()), (41, 40));
    eprintln!(
        "email: {} bytes, {} links, {} tracked",
        doc.len(),
        done.report.len(),
        done.tracked()
    );
    c.bench_function("rewrite_100k_email_40_links", |b| {
        b.iter(|| {
            rewrite(
                &minter,
                &Standing::Active,
                black_box(&opts),
                black_box(doc.as_bytes()),
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
