"""Recommendations: a user's history and the run's top-K for them, scored as of their test period, with its hits."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import store, widgets
from app.run_data import run_data
from em3.evaluation.views_user import (hits_per_user, random_hits, test_period, user_history, user_index,
                                      user_test_auc)

st.title(":material/movie: Recommendations")
run = widgets.pick_explained_run("explain/recommendations.json", key="rec-run")
recs = store.artifact_json(store.uri(), run["run_id"], "explain/recommendations.json") or {}
if not recs:
    st.info("explain/recommendations.json is empty or unreadable.")
    st.stop()
data, why = run_data(run["run_id"])
if data is None:
    st.info(f"History, titles and posters unavailable: {why}. Showing the raw top-K.")

counts = hits_per_user(data.samples, recs) if data is not None else {}   # user → (hits, test-period positives)


def _user_label(u: str) -> str:
    if u not in counts:
        return u
    hits = counts[u][0]
    return f"{u} · {hits} hit{'' if hits == 1 else 's'} in top-{len(recs[u])}"


c1, c2 = st.columns(2)
query = c1.text_input("Search users (id)", key="rec-user-q", placeholder="e.g. 42")
users = [u for u in recs if query.strip() in u] or list(recs)
if query.strip() and not any(query.strip() in u for u in recs):
    c1.caption(f"No user matching {query!r} among the {len(recs)} users with exported recommendations.")
user = c1.selectbox(f"User ({len(recs)} with exported top-K)", users, key="rec-user", format_func=_user_label)
if counts:
    k = max(len(top) for top in recs.values())
    total, slots = sum(h for h, _ in counts.values()), sum(len(top) for top in recs.values())
    with_hits = sum(h > 0 for h, _ in counts.values())
    c1.caption(f"Over the {len(recs)} exported users: {total} hit{'' if total == 1 else 's'} in {slots} recommendations "
               f"({with_hits} user{'' if with_hits == 1 else 's'} with at least one); a top-{k} drawn at random from "
               f"the {data.samples.num_items:,} items would score about "
               f"{random_hits(counts, k=k, num_items=data.samples.num_items):.1f}.")
item_q = c2.text_input("Search items (title)", key="rec-item-q", placeholder="e.g. Star")

if item_q.strip() and data is not None:
    items = data.raw.items
    hits = items[items["title"].astype(str).str.contains(item_q.strip(), case=False, regex=False)].head(12)
    with st.expander(f"Items matching {item_q!r}: {len(hits)} shown", expanded=True):
        recommended_to = {int(i): [u for u, r in recs.items() if any(int(x[0]) == int(i) for x in r)] for i in hits["item_id"]}
        st.dataframe(pd.DataFrame({"item_id": hits["item_id"], "title": hits["title"],
                                   "in top-K of users": [", ".join(recommended_to[int(i)]) or "–" for i in hits["item_id"]]}),
                     hide_index=True)

top = recs[user]
uid = int(user)
positives, start = set(), None
if data is not None:
    u_idx = user_index(data.samples, uid)
    start, positives = test_period(data.samples, u_idx) if u_idx is not None else (None, set())
    hist = user_history(data.raw, uid)
    st.subheader(f"User {uid}: history ({len(hist)} interactions, time order; latest 12 shown)")
    id_to_index = {int(v): k + 1 for k, v in enumerate(data.samples.item_ids)}
    recent = hist.tail(12)
    cols = st.columns(min(len(recent), 6) or 1)
    for k, (_, h) in enumerate(recent.iterrows()):
        with cols[k % len(cols)]:
            idx = id_to_index.get(int(h["item_id"]))
            img = data.image(idx) if idx else None
            if img is not None:
                st.image(img, width=80)
            if "rating" in h and pd.notna(h.get("rating")):
                score = f"rated {h['rating']:g}"
            else:
                score = "positive" if h.get("label", 0) > 0.5 else "negative"
            period = " · test period" if start is not None and int(h["timestamp"]) >= start else ""
            st.caption(f"{str(h['title'])[:40]} · {score}{period}")
    with st.expander("Full history table"):
        shown = hist.copy()
        shown["time"] = pd.to_datetime(shown["timestamp"], unit="s")
        shown["period"] = ["test" if start is not None and t >= start else "before test" for t in shown["timestamp"]]
        st.dataframe(shown.drop(columns=["timestamp"]), hide_index=True)
    if u_idx is not None and st.button("Compute this user's test AUC (loads the model)", key="rec-auc"):
        try:
            from em3.config import from_dict
            cfg = from_dict(store.artifact_json(store.uri(), run["run_id"], "config.json"))
            value, pos, neg = user_test_auc(run["run_id"], cfg, data.samples, data.raw, u_idx)
        except Exception as exc:  # noqa: BLE001 - missing checkpoint, older config: say what
            st.info(f"Cannot score this user: {type(exc).__name__}: {exc}")
        else:
            st.metric("User's test AUC", "n/a (one class only)" if value != value else f"{value:.3f}",
                      help=f"{pos} positive and {neg} negative test samples")

st.subheader(f"Top-{len(top)} recommended")
hits = sum(int(i) in positives for i, _ in top)
if data is None:
    st.caption("Test-period positives need the rebuilt dataset.")
elif u_idx is None:
    st.caption(f"User {uid} is not in the run's rebuilt dataset: no test period to count hits in.")
elif start is None:
    st.caption(f"User {uid} has no test period (too few events for a test sample): no hits to count.")
else:
    since = pd.to_datetime(start, unit="s").strftime("%Y-%m-%d %H:%M")
    st.caption(f"Shown: the test period of user {uid}, from {since} (their last events). The top-K was scored "
               "from the history before it, with the user's earlier positives excluded, so a hit is an item "
               f"the model was not handed. {hits} of {len(top)} rated positively by the user in the test period "
               f"(:material/check_circle:; {len(positives)} test-period positives in all).")
cols = st.columns(min(len(top), 5) or 1)
index_of = {int(v): k + 1 for k, v in enumerate(data.samples.item_ids)} if data else {}
for k, (item_id, score) in enumerate(top):
    with cols[k % len(cols)]:
        idx = index_of.get(int(item_id))
        img = data.image(idx) if data and idx else None
        if img is not None:
            st.image(img, width=90)
        title = data.title(idx) if data and idx else f"item {int(item_id)}"
        mark = " :material/check_circle:" if int(item_id) in positives else ""
        st.caption(f"#{k + 1} {title[:40]}{mark}  \nscore {score:.3f}")
