"""Compare: two lanes' answers side by side per prompt, flag badges, filters, a diff view,
and blind A/B review with win rates. The logic is lib/quality/review/; this page only draws.

Answers, prompts and flag reasons are untrusted text: answers and diffs go through
st.code / st.text, names and reasons through esc_md; nothing here renders HTML.
"""

from __future__ import annotations

import streamlit as st

from lib import charts, quality, store
from lib.app import access, navigation, session
from lib.app.formatting import esc_md, fmt_num
from lib.quality import review

DB = session.db_key()
MAY_VOTE = access.can_write()  # a viewer reads answers and win rates, and casts no vote
REVEALED = "compare_revealed"  # the id of the vote just cast, to reveal its lanes
SHORTCUTS = {"left": "1", "right": "2", "tie": "3", "both_bad": "4"}
LONG_ANSWER = 1500  # characters: longer answers scroll inside a fixed-height block


@st.cache_data(max_entries=4, show_spinner=False)
def load(db: str, run_id: str, stamp: tuple) -> review.ReviewData | None:
    """The run's answers, read again only when its stamp (status, last request) changes."""
    return review.load_review(db, run_id)


def badges(answer: review.Answer | None) -> None:
    with st.container(horizontal=True, gap="small"):
        for b in review.badges(answer):
            tip = esc_md(b.reason) if b.reason else None
            st.badge(esc_md(b.label), color=b.color, icon=b.icon, help=tip)  # type: ignore[arg-type]


def answer_block(answer: review.Answer | None, blind: bool) -> None:
    badges(answer)
    if answer is None:
        st.caption("No request with this index on this lane.")
        return
    if answer.error:
        st.error(f"failed: {esc_md(answer.error)}")
        return
    if not answer.text.strip():
        st.caption("(empty answer)")
    else:
        height = 420 if len(answer.text) > LONG_ANSWER else "content"
        st.code(answer.text, language=None, wrap_lines=True, height=height)
    if not blind:  # timings and token counts would give the engine away
        bits = [
            f"{fmt_num(answer.e2el_ms, 0, 'ms')} E2E",
            f"TTFT {fmt_num(answer.ttft_ms, 0, 'ms')}",
            f"{answer.output_tokens if answer.output_tokens is not None else '?'} tokens",
            f"finish: {answer.finish_reason or '?'}",
        ]
        st.caption(esc_md(" · ".join(bits)))


def prompt_header(data: review.ReviewData, prompt_idx: int) -> None:
    prompt = review.prompt_of(data, prompt_idx)
    name = f" · {esc_md(prompt.name)}" if prompt.name else ""
    st.markdown(f"##### Prompt {prompt_idx + 1}{name}")
    st.text(prompt.text[:2000])  # the user's text, shown as text
    expects = []
    if prompt.expect_lang:
        expects.append(f"expects {quality.LANG_NAMES.get(prompt.expect_lang, '?')}")
    if prompt.expect_json is not None:
        keys = ", ".join(prompt.expect_json) or "any keys"
        expects.append(f"JSON with {keys}")
    if expects:
        st.caption(esc_md(" · ".join(expects)))


def pair_block(
    pair: review.Pair,
    order: tuple[int, int],
    blind: bool,
    show_diff: bool,
    note: str = "",
) -> None:
    """One item: the two answers in columns (left, right), badges above, diff below."""
    with st.container(border=True):
        head = f"Send {pair.send} of {pair.sends} · request {pair.idx} · c={pair.concurrency}"
        st.caption(esc_md(head + (f" · {note}" if note else "")))
        labels = ("Left", "Right") if blind else tuple(data.lanes[li] for li in order)
        for col, li, label in zip(st.columns(2), order, labels, strict=True):
            with col:
                swatch = "" if blind else f":{charts.lane_color_name(li)}[■] "
                st.markdown(f"{swatch}**{esc_md(label)}**")
                answer_block(pair.answer(li), blind)
        if show_diff:
            a, b = pair.answer(order[0]), pair.answer(order[1])
            diff = review.answer_diff(a.text if a else "", b.text if b else "", *labels)
            if diff:
                st.code(diff, language="diff", wrap_lines=True)
            else:
                st.caption("The two answers are identical.")


def lane_summary(scope: int | None) -> None:
    cols = st.columns(min(len(data.lanes), 4))
    for n, s in enumerate(review.lane_summaries(data, scope)):
        with cols[n % len(cols)].container(border=True):
            st.markdown(f":{charts.lane_color_name(s.lane_idx)}[■] **{esc_md(s.name)}**")
            line = esc_md(s.line)  # our own words and numbers, escaped all the same
            # Bold and an icon rather than a colour: colours name lanes on these pages.
            st.markdown(f":material/flag: **{line}**" if s.flagged else line)
            st.caption(f"{s.flagged} of {s.answers} answers flagged")


def votes_section(votes: list[dict], scope: int | None) -> None:
    st.markdown("#### Votes and win rates")
    if not votes:
        st.caption("No votes yet. Turn on Blind review to vote on answer pairs.")
        return
    rows = [r for r in review.win_rates(votes, data.lanes, scope) if r["votes"]]
    where = f"at c={scope}" if scope is not None else "at every level"
    st.caption(
        f"{len(votes)} vote{'s' if len(votes) != 1 else ''} in this run, all reviewers; "
        f"rates {where}. Ties count as half a"
        " win; “both bad” votes are counted but left out of the rate. 95 % Wilson interval."
    )
    if not rows:
        st.info("No votes at this level yet.")
    else:
        st.dataframe(
            rows,
            hide_index=True,
            column_order=["lane", "win_rate", "interval", "wins", "losses", "ties", "both_bad"],
            column_config={
                "lane": st.column_config.TextColumn("Lane", width="large"),
                "win_rate": st.column_config.ProgressColumn(
                    "Win rate", format="percent", min_value=0.0, max_value=1.0
                ),
                "interval": "95 % interval",
                "wins": "Wins",
                "losses": "Losses",
                "ties": "Ties",
                "both_bad": "Both bad",
            },
        )
        colors = charts.lane_colors(list(data.lanes.values()))
        st.plotly_chart(
            review.win_rate_figure(rows, colors), key=f"compare-winrate-{run_id}", theme=None
        )
    st.download_button(
        "Download votes (CSV)",
        review.votes_csv(review.export_rows(data, votes)),
        file_name=f"servescope-votes-{run_id}.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="compare-votes-csv",
    )


def blind_review(shown: list[review.Pair], votes: list[dict], voter: str) -> None:
    pool, left_out = review.blind_pool(shown)
    queue = review.blind_order(run_id, pool, voter)
    mine = review.my_votes(votes, lane_a, lane_b, voter)
    done = sum(p.key in mine for p in queue)
    st.progress(done / len(queue) if queue else 0.0, text=f"{done} of {len(queue)} voted")
    if left_out:
        st.caption(f"{left_out} pairs with a failed or missing answer are not put to a vote.")
    just = next((v for v in votes if v["id"] == st.session_state.get(REVEALED)), None)
    if just is not None:
        msg, undo = st.columns([5, 1], vertical_alignment="center")
        msg.success(esc_md(review.verdict(just, data.lanes)), icon=":material/visibility:")
        if undo.button("Undo vote", icon=":material/undo:", key="compare-undo"):
            with store.opened(DB) as conn:
                store.delete_votes(conn, run_id, vote_id=just["id"])
            st.session_state.pop(REVEALED, None)
            st.rerun()
    current = next((p for p in queue if p.key not in mine), None)
    if current is None:
        if queue:
            st.success(f"All {len(queue)} pairs voted. Win rates are below.")
        else:
            st.info("Nothing to vote on with these filters.")
        return
    pair_block(current, review.sides(run_id, current, voter), True, show_diff)
    buttons = st.columns(4)
    for col, (choice, label) in zip(buttons, review.SIDE_CHOICES.items(), strict=True):
        clicked = col.button(
            label,
            key=f"compare-vote-{choice}",
            width="stretch",
            shortcut=SHORTCUTS[choice],
            type="primary" if choice in ("left", "right") else "secondary",
        )
        if clicked:
            vote_id = review.record_vote(DB, run_id, current, choice, voter)
            st.session_state[REVEALED] = vote_id
            st.rerun()


st.title("Compare")
run_id = navigation.run_picker()
if not run_id:
    st.stop()
stamp = review.stamp(DB, run_id)
data = load(DB, run_id, stamp) if stamp else None
if data is None:
    st.stop()
if len(data.lanes) < 2:
    st.info("This run has one lane; Compare puts two lanes side by side.")
    navigation.page_link("app_pages/results.py", "Its answers are on the Results page", run=run_id)
    st.stop()
if not data.answers:
    st.info("No answers in this run yet. They appear here as requests finish.")
    st.stop()

summary_slot = st.container()  # filled once the level is picked below
lane_ids = list(data.lanes)
c1, c2, c3, c4 = st.columns([3, 3, 2, 2])
lane_a = c1.selectbox(
    "Lane A", lane_ids, index=0, format_func=data.lanes.get, key=f"compare_a_{run_id}"
)
lane_b = c2.selectbox(
    "Lane B", lane_ids, index=1, format_func=data.lanes.get, key=f"compare_b_{run_id}"
)
level = (
    c3.selectbox(
        "Concurrency",
        [0, *data.levels],  # 0: every level (a real level is at least 1)
        format_func=lambda c: f"c={c}" if c else "All levels",
        key=f"compare_level_{run_id}",
    )
    or None
)
sends = c4.selectbox(
    "Sends per prompt",
    list(review.SENDS),
    format_func=review.SENDS.get,
    key="compare_sends",
    help="A prompt sent several times at a level gives one pair per send.",
)
f1, f2, f3, f4 = st.columns([4, 1.2, 1.4, 2.4], vertical_alignment="bottom")
mode = f1.segmented_control(
    "Show",
    list(review.FILTERS),
    format_func=review.FILTERS.get,
    default="all",
    required=True,
    key="compare_filter",
)
show_diff = f2.toggle("Diff view", key="compare_diff")
blind = (
    f3.toggle(
        "Blind review",
        key="compare_blind",
        help="Lane names hidden, sides shuffled per item; vote, then see who was who."
        + ("" if MAY_VOTE else " Operators vote; viewers read the win rates."),
        disabled=not MAY_VOTE,
    )
    and MAY_VOTE
)
voter = f4.text_input(
    "Reviewer (optional)", key="compare_voter", max_chars=60, placeholder="your name"
).strip()

with summary_slot:
    if blind:
        st.caption("Lane names, timings and the per-lane summary are hidden in blind review.")
    else:
        lane_summary(level)
if data.status in ("pending", "running"):
    st.caption("This run is still going: new answers appear on the next interaction.")
if lane_a == lane_b:
    st.warning("Pick two different lanes.")
    st.stop()

items = review.pairs(data, lane_a, lane_b, level, sends)  # type: ignore[arg-type]
shown = review.filter_pairs(items, mode or "all")
with store.opened(DB) as conn:
    votes = store.get_votes(conn, run_id)

if blind:
    blind_review(shown, votes, voter)
else:
    mine = review.my_votes(votes, lane_a, lane_b, voter)
    pages = review.page_count(len(shown))
    info, pager = st.columns([5, 1], vertical_alignment="bottom")
    info.caption(f"{len(shown)} of {len(items)} answer pairs · {review.FILTERS[mode or 'all']}")
    page = 1
    if pages > 1:
        # A narrower filter can leave fewer pages than the one last shown.
        st.session_state["compare_page"] = min(st.session_state.get("compare_page", 1), pages)
        page = int(pager.number_input(f"Page (of {pages})", 1, pages, key="compare_page"))
    if not shown:
        st.info("No answer pairs match this filter.")
    last_prompt = None
    for pair in shown[(page - 1) * review.PAGE_SIZE : page * review.PAGE_SIZE]:
        if pair.prompt_idx != last_prompt:
            prompt_header(data, pair.prompt_idx)
            last_prompt = pair.prompt_idx
        vote = mine.get(pair.key)
        note = ""
        if vote is not None:
            won = review.winner_lane(vote)
            verdict = data.lanes.get(won, "?") + " won" if won is not None else vote["vote"]
            note = f"your blind vote: {verdict.replace('_', ' ')}"
        pair_block(pair, (lane_a, lane_b), False, show_diff, note)

votes_section(votes, level)
