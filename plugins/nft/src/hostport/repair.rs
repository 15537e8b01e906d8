//! Hand-made damage to the table's chains, and its repair by the next ADD.
//!
//! `nft flush table` (or `nft flush chain` of one of ours) removes rules and
//! keeps chains and sets: the published ports' elements survive, but
//! nothing maps them any more. One chain dump shows it, because a chain's
//! kernel use count is its own rules plus the rules jumping to it: a chain
//! of ours below its whole count lost rules or jumps (a deleted chain is
//! simply absent). A lane's conditions are kept in its chain's comment,
//! which a flush leaves in place, so whichever ADD comes next rebuilds every
//! lane, not only its caller's.

use super::*;

/// What is wrong with one chain of ours.
pub(super) struct Damage {
    chain: String,
    /// `None`: the chain is missing; else (use count, whole use count).
    uses: Option<(u32, u32)>,
}

impl Damage {
    fn describe(&self) -> String {
        let role = match self.chain.as_str() {
            DNAT_CHAIN | "prerouting" | "output" => "maps the published ports",
            "postrouting" => "masquerades hairpin, host-loopback and masqAll connections",
            LAST_CHAIN => "isolates internal networks",
            _ => "maps the ports published under its conditions",
        };
        match self.uses {
            None => format!("chain {} ({role}) is missing", self.chain),
            Some((have, whole)) => format!(
                "chain {} ({role}) has {have} of its {whole} rules and jumps (flushed by hand?)",
                self.chain
            ),
        }
    }
}

/// The kernel use count of a whole chain of the fixed layout: its own rules
/// and the rules of the layout jumping to it.
fn whole_use(layout: &[ChainLayout], chain: &str) -> u32 {
    let own = layout
        .iter()
        .find(|c| c.spec.name == chain)
        .map_or(0, |c| c.rules.len());
    let jumps = layout
        .iter()
        .flat_map(|c| &c.rules)
        .filter(|r| {
            r.exprs
                .iter()
                .any(|e| matches!(e, Expr::Immediate(Verdict::Jump(t)) if t == chain))
        })
        .count();
    (own + jumps) as u32
}

/// The chains of the table as one dump shows them.
pub(super) struct Survey {
    chains: Vec<ChainInfo>,
}

impl Survey {
    /// One chain dump (empty when the table is missing).
    pub(super) fn read(sock: &mut NftSocket) -> Result<Survey> {
        Ok(Survey {
            chains: query::list_chains(sock, FAMILY, TABLE)?,
        })
    }

    fn lane_chains(&self) -> impl Iterator<Item = &ChainInfo> {
        self.chains.iter().filter(|c| is_lane_chain(&c.name))
    }

    /// The chains of ours that are missing or below their whole use count,
    /// the caller's `own` lanes included (missing: not made yet, or deleted).
    pub(super) fn damage(&self, own: &[&Lane]) -> Vec<Damage> {
        let layout = infra_chains();
        // A lane chain is whole with its DNAT rules and its jump from `dnat`.
        let lane_whole = dnat_rules(false, "").len() as u32 + 1;
        let lanes = self.lane_chains().count() as u32;
        let mut out = Vec::new();
        let mut judge = |name: &str, whole: u32| {
            let uses = match self.chains.iter().find(|c| c.name == name) {
                None => None,
                Some(c) if c.use_count < whole => Some((c.use_count, whole)),
                Some(_) => return,
            };
            out.push(Damage {
                chain: name.to_string(),
                uses,
            });
        };
        for c in &layout {
            let name = c.spec.name.as_str();
            // `dnat` also holds one jump per lane.
            let extra = if name == DNAT_CHAIN { lanes } else { 0 };
            judge(name, whole_use(&layout, name) + extra);
        }
        for c in self.lane_chains() {
            judge(&c.name, lane_whole);
        }
        for lane in own {
            if !self.chains.iter().any(|c| c.name == lane.chain()) {
                judge(&lane.chain(), lane_whole);
            }
        }
        out
    }

    /// Every lane the table should have: each lane chain's, read back from
    /// its comment (a chain made before lanes kept their conditions there:
    /// from its jump's comment in `dnat`, while that survives), and the
    /// caller's `own`. A lane whose conditions are nowhere any more is made
    /// again by its own network's next ADD.
    fn lanes(&self, sock: &mut NftSocket, own: &[&Lane]) -> Result<Vec<Lane>> {
        let mut out: Vec<Lane> = Vec::new();
        let mut jump_comments: Option<Vec<String>> = None;
        for c in self.lane_chains() {
            let mut lane = c
                .comment
                .as_deref()
                .and_then(|t| Lane::from_comment(&c.name, t));
            if lane.is_none() {
                if jump_comments.is_none() {
                    let rules = query::list_rules(sock, FAMILY, TABLE, DNAT_CHAIN)?;
                    jump_comments = Some(
                        rules
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|r| r.comment)
                            .collect(),
                    );
                }
                lane = jump_comments
                    .iter()
                    .flatten()
                    .find_map(|t| Lane::from_comment(&c.name, t));
            }
            out.extend(lane);
        }
        for lane in own {
            if !out.iter().any(|l| l.chain() == lane.chain()) {
                out.push((*lane).clone());
            }
        }
        Ok(out)
    }

    /// The chains of ours that exist, in an order the kernel can delete
    /// them in one transaction: the base chains (their jumps into `dnat` go
    /// with them), then `dnat` (its jumps into the lanes), then the lanes.
    fn ours(&self) -> Vec<&str> {
        let fixed: Vec<String> = infra_chains().into_iter().map(|c| c.spec.name).collect();
        let mut v: Vec<&str> = self
            .chains
            .iter()
            .map(|c| c.name.as_str())
            .filter(|n| fixed.iter().any(|f| f == n) || is_lane_chain(n))
            .collect();
        v.sort_by_key(|n| match *n {
            DNAT_CHAIN => 1,
            n if is_lane_chain(n) => 2,
            _ => 0,
        });
        v
    }
}

/// What an ADD attempt put into its batch to make the table whole.
#[derive(Default)]
pub(super) struct Fix {
    /// Something was missing or damaged.
    pub(super) found: bool,
    /// Chain adds with NLM_F_EXCL: EEXIST means another process made them meanwhile.
    pub(super) excl: Vec<usize>,
    /// The batch deletes chains, so it must act on what was read: commit it
    /// under this generation (ERESTART if the ruleset changed since).
    pub(super) genid: Option<u32>,
}

/// Reads the table and adds to `b` what makes it whole for a caller
/// publishing through the lanes `own`: nothing; or only the caller's new
/// lanes; or, when anything else is missing or damaged, every chain of
/// ours deleted and built again with every lane (the table's sets and
/// their elements stay).
pub(super) fn plan(sock: &mut NftSocket, b: &mut Batch, own: &[&Lane]) -> Result<Fix> {
    let genid = query::generation(sock)?;
    let survey = Survey::read(sock)?;
    let damage = survey.damage(own);
    if damage.is_empty() {
        return Ok(Fix::default());
    }
    let mut fix = Fix {
        found: true,
        ..Fix::default()
    };
    let new_lanes: Vec<&Lane> = own
        .iter()
        .copied()
        .filter(|l| {
            damage
                .iter()
                .any(|d| d.uses.is_none() && d.chain == l.chain())
        })
        .collect();
    if new_lanes.len() == damage.len() {
        for lane in new_lanes {
            fix.excl.push(push_lane(b, lane));
        }
        return Ok(fix);
    }
    let lanes = survey.lanes(sock, own)?;
    let ours = survey.ours();
    for name in &ours {
        b.del_chain(FAMILY, TABLE, name);
    }
    fix.excl = push_infra(b);
    for lane in &lanes {
        fix.excl.push(push_lane(b, lane));
    }
    if !ours.is_empty() {
        fix.genid = Some(genid);
    }
    Ok(fix)
}

/// CHECK: fails naming every missing or damaged chain the caller's ports
/// depend on (the fixed chains and its `own` lanes; another network's lane
/// does not concern it).
pub(super) fn check(sock: &mut NftSocket, own: &[&Lane]) -> Result<()> {
    let survey = Survey::read(sock)?;
    let damage: Vec<Damage> = survey
        .damage(own)
        .into_iter()
        .filter(|d| !is_lane_chain(&d.chain) || own.iter().any(|l| l.chain() == d.chain))
        .collect();
    if damage.is_empty() {
        return Ok(());
    }
    let what = if survey.chains.is_empty() && !query::table_exists(sock, FAMILY, TABLE)? {
        "is missing".to_string()
    } else {
        let each: Vec<String> = damage.iter().map(Damage::describe).collect();
        format!("is damaged: {}", each.join("; "))
    };
    // A missing lane chain took its conditions with it: only its own network knows them.
    let who = if damage
        .iter()
        .all(|d| d.uses.is_none() && is_lane_chain(&d.chain))
    {
        "of a container with these conditions"
    } else {
        "(of any container)"
    };
    Err(Error::Invalid(format!(
        "table {FAMILY} {TABLE} {what}; the next ADD {who} restores it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_use_counts_rules_and_jumps_in() {
        let layout = infra_chains();
        // 4 DNAT rules + the jumps from prerouting and output.
        assert_eq!(whole_use(&layout, DNAT_CHAIN), 6);
        assert_eq!(whole_use(&layout, "prerouting"), 1);
        assert_eq!(whole_use(&layout, "postrouting"), 5);
        assert_eq!(whole_use(&layout, LAST_CHAIN), 2);
    }

    #[test]
    fn deletion_order_frees_every_chain_before_it_goes() {
        let chain = |name: &str| ChainInfo {
            name: name.into(),
            handle: 0,
            use_count: 0,
            is_base: false,
            policy_drop: None,
            comment: None,
        };
        let s = Survey {
            chains: [
                "lane4-0123456789ab",
                "dnat",
                "prerouting",
                "mine",
                "forward",
            ]
            .map(chain)
            .into(),
        };
        assert_eq!(
            s.ours(),
            ["prerouting", "forward", "dnat", "lane4-0123456789ab"]
        );
    }
}
