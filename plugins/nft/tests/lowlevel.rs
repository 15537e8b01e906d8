//! Low-level layer against the real kernel: batches, errors, queries.

mod common;

use cni_nft::query;
use cni_nft::*;
use common::*;

fn t() -> String {
    "ltab".to_string()
}

fn chain(name: &str) -> ChainSpec {
    ChainSpec {
        family: Family::Inet,
        table: t(),
        name: name.into(),
        base: None,
        comment: None,
    }
}

#[test]
fn errors_name_the_object_and_roll_back() {
    in_netns(|| {
        let mut s = NftSocket::new().unwrap();
        let mut b = Batch::new();
        b.add_table(Family::Inet, "ltab", Create::IfMissing);
        b.add_element(
            Family::Inet,
            "ltab",
            "nope",
            &Element::ip("10.1.2.3".parse().unwrap()),
            Create::IfMissing,
        );
        let e = b.commit(&mut s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "nftables: add element 10.1.2.3 to set inet ltab nope: No such file or directory"
        );
        assert_eq!(e.failures()[0].index, 1);
        // The table from the same batch was rolled back.
        assert!(!query::table_exists(&mut s, Family::Inet, "ltab").unwrap());

        // Exclusive create of an existing chain: EEXIST for that op only.
        let mut b = Batch::new();
        b.add_table(Family::Inet, "ltab", Create::IfMissing);
        b.add_chain(&chain("c"), Create::Exclusive);
        b.commit(&mut s).unwrap();
        let mut b = Batch::new();
        b.add_table(Family::Inet, "ltab", Create::IfMissing);
        b.add_chain(&chain("d"), Create::Exclusive);
        b.add_chain(&chain("c"), Create::Exclusive);
        let e = b.commit(&mut s).unwrap_err();
        assert_eq!(e.failures().len(), 1);
        assert_eq!(e.failures()[0].index, 2);
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert!(
            e.to_string().contains("add chain inet ltab c: File exists"),
            "{e}"
        );
        assert!(!query::chain_exists(&mut s, Family::Inet, "ltab", "d").unwrap());
        assert!(query::chain_exists(&mut s, Family::Inet, "ltab", "c").unwrap());
    });
}

#[test]
fn rules_list_and_delete_by_handle() {
    in_netns(|| {
        let mut s = NftSocket::new().unwrap();
        let mut b = Batch::new();
        b.add_table(Family::Inet, "ltab", Create::IfMissing);
        b.add_chain(&chain("c"), Create::IfMissing);
        b.add_set(
            &SetSpec {
                family: Family::Inet,
                table: t(),
                name: "s".into(),
                key: KeyType::Ipv4Addr,
                verdict_map: false,
                data: None,
                flags: 0,
            },
            Create::IfMissing,
        );
        let mut exprs = expr::match_addr_prefix(false, "10.0.0.0".parse().unwrap(), 8);
        exprs.push(Expr::Counter);
        exprs.push(Expr::Immediate(Verdict::Accept));
        let rule = |exprs: Vec<Expr>, comment: &str| RuleSpec {
            family: Family::Inet,
            table: t(),
            chain: "c".into(),
            exprs,
            comment: Some(comment.into()),
            append: true,
        };
        b.add_rule(&rule(exprs.clone(), "first"));
        let mut lookup: Vec<Expr> = expr::match_nfproto(libc::AF_INET as u8).into();
        lookup.push(expr::load_addr(false, true, 1));
        lookup.push(Expr::Lookup {
            set: "s".into(),
            sreg: 1,
            dreg: None,
            invert: true,
        });
        lookup.push(Expr::Immediate(Verdict::Drop));
        b.add_rule(&rule(lookup.clone(), "second"));
        let mut l4: Vec<Expr> = expr::match_l4proto(17).into();
        l4.push(Expr::Immediate(Verdict::Return));
        b.add_rule(&rule(l4, "third"));
        b.commit(&mut s).unwrap();

        let text = nft(&["list", "chain", "inet", "ltab", "c"]);
        assert!(
            text.contains("ip saddr 10.0.0.0/8 counter packets 0 bytes 0 accept comment \"first\""),
            "{text}"
        );
        assert!(
            text.contains("ip daddr != @s drop comment \"second\""),
            "{text}"
        );
        assert!(
            text.contains("meta l4proto udp return comment \"third\""),
            "{text}"
        );

        let rules = query::list_rules(&mut s, Family::Inet, "ltab", "c")
            .unwrap()
            .unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].comment.as_deref(), Some("first"));
        assert_eq!(rules[0].exprs, exprs);
        assert_eq!(rules[1].exprs, lookup);
        let mut b = Batch::new();
        b.del_rule(Family::Inet, "ltab", "c", rules[1].handle);
        b.commit(&mut s).unwrap();
        let left = query::list_rules(&mut s, Family::Inet, "ltab", "c")
            .unwrap()
            .unwrap();
        let names: Vec<_> = left.iter().filter_map(|r| r.comment.clone()).collect();
        assert_eq!(names, ["first", "third"]);
        assert_eq!(
            query::list_rules(&mut s, Family::Inet, "ltab", "zz").unwrap(),
            None
        );
        assert_eq!(
            query::list_rules(&mut s, Family::Ip, "nosuch", "c").unwrap(),
            None
        );
    });
}

#[test]
fn set_elements_with_comments_and_verdicts() {
    in_netns(|| {
        let mut s = NftSocket::new().unwrap();
        let mut b = Batch::new();
        b.add_table(Family::Inet, "ltab", Create::IfMissing);
        b.add_chain(&chain("c"), Create::IfMissing);
        let map = SetSpec {
            family: Family::Inet,
            table: t(),
            name: "m".into(),
            key: KeyType::Ipv6Addr,
            verdict_map: true,
            data: None,
            flags: 0,
        };
        b.add_set(&map, Create::IfMissing);
        let el = Element::ip("fd00::1".parse().unwrap())
            .with_verdict(Verdict::Jump("c".into()))
            .with_comment("hello");
        b.add_element(Family::Inet, "ltab", "m", &el, Create::IfMissing);
        b.add_element(
            Family::Inet,
            "ltab",
            "m",
            &Element::ip("fd00::2".parse().unwrap()).with_verdict(Verdict::Drop),
            Create::IfMissing,
        );
        b.commit(&mut s).unwrap();
        assert!(query::set_exists(&mut s, Family::Inet, "ltab", "m").unwrap());
        assert!(!query::set_exists(&mut s, Family::Inet, "ltab", "n").unwrap());
        let mut els = query::list_elements(&mut s, Family::Inet, "ltab", "m")
            .unwrap()
            .unwrap();
        els.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(els.len(), 2);
        assert_eq!(els[0], el);
        assert_eq!(els[1].verdict, Some(Verdict::Drop));
        let got = query::get_element(
            &mut s,
            Family::Inet,
            "ltab",
            "m",
            &Element::ip("fd00::1".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(got, Some(el.clone()));
        assert_eq!(
            query::get_element(
                &mut s,
                Family::Inet,
                "ltab",
                "m",
                &Element::ip("fd00::9".parse().unwrap())
            )
            .unwrap(),
            None
        );
        assert_eq!(
            query::list_elements(&mut s, Family::Inet, "ltab", "nope").unwrap(),
            None
        );
        let text = nft(&["list", "map", "inet", "ltab", "m"]);
        assert!(
            text.contains("fd00::1 comment \"hello\" : jump c"),
            "{text}"
        );
        // Identical re-add is a no-op; exclusive re-add is EEXIST.
        let mut b = Batch::new();
        b.add_element(Family::Inet, "ltab", "m", &el, Create::IfMissing);
        b.commit(&mut s).unwrap();
        let mut b = Batch::new();
        b.add_element(Family::Inet, "ltab", "m", &el, Create::Exclusive);
        assert_eq!(b.commit(&mut s).unwrap_err().errno(), Some(libc::EEXIST));
        // Delete + add of the same key in one batch replaces it.
        let mut b = Batch::new();
        b.del_element(Family::Inet, "ltab", "m", &el);
        b.add_element(
            Family::Inet,
            "ltab",
            "m",
            &el.clone().with_comment("replaced"),
            Create::Exclusive,
        );
        b.commit(&mut s).unwrap();
        let got = query::get_element(&mut s, Family::Inet, "ltab", "m", &el)
            .unwrap()
            .unwrap();
        assert_eq!(got.comment.as_deref(), Some("replaced"));
    });
}

#[test]
fn stale_generation_is_rejected() {
    in_netns(|| {
        let mut s = NftSocket::new().unwrap();
        let g = query::generation(&mut s).unwrap();
        let mut b = Batch::new();
        b.add_table(Family::Inet, "ltab", Create::IfMissing);
        b.commit(&mut s).unwrap();
        assert_ne!(query::generation(&mut s).unwrap(), g);
        let mut b = Batch::new().with_genid(g);
        b.add_table(Family::Inet, "ltab2", Create::IfMissing);
        let e = b.commit(&mut s).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ERESTART), "{e}");
        assert!(!query::table_exists(&mut s, Family::Inet, "ltab2").unwrap());
        let g = query::generation(&mut s).unwrap();
        let mut b = Batch::new().with_genid(g);
        b.add_table(Family::Inet, "ltab2", Create::IfMissing);
        b.commit(&mut s).unwrap();
    });
}

#[test]
fn base_chain_with_policy() {
    in_netns(|| {
        let mut s = NftSocket::new().unwrap();
        let mut b = Batch::new();
        b.add_table(Family::Ip, "ltab", Create::IfMissing);
        b.add_chain(
            &ChainSpec {
                family: Family::Ip,
                table: t(),
                name: "fw".into(),
                base: Some(BaseChain {
                    hook: Hook::Forward,
                    priority: priority::FILTER,
                    chain_type: ChainType::Filter,
                    policy: Some(Verdict::Drop),
                }),
                comment: None,
            },
            Create::IfMissing,
        );
        b.commit(&mut s).unwrap();
        let text = nft(&["list", "table", "ip", "ltab"]);
        assert!(
            text.contains("type filter hook forward priority filter; policy drop;"),
            "{text}"
        );
        let c = query::get_chain(&mut s, Family::Ip, "ltab", "fw")
            .unwrap()
            .unwrap();
        assert!(c.is_base);
        let mut b = Batch::new();
        b.del_chain(Family::Ip, "ltab", "fw");
        b.del_table(Family::Ip, "ltab");
        b.commit(&mut s).unwrap();
        assert!(!query::table_exists(&mut s, Family::Ip, "ltab").unwrap());
    });
}
