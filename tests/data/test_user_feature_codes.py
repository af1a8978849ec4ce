"""User features as codes: exact vocabulary codes and quantile buckets, 0 for unknown, every source's 'auto'."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from em3.config import DataConfig
from em3.data.files import load_files
from em3.data.movielens import load_movielens
from em3.data.samples import build_samples
from em3.data.schema import RawDataset
from em3.data.user_features import bucket_codes, encode_user_features, vocabulary_codes
from em3.errors import DataError


def _raw(users: pd.DataFrame | None, auto: tuple[str, ...] = ()) -> RawDataset:
    return RawDataset(name="tiny", items=pd.DataFrame(), interactions=pd.DataFrame(), users=users,
                      attribute_columns=(), load_image=lambda _: None, user_feature_columns=auto)


USERS = pd.DataFrame({
    "user_id": [30, 10, 20, 50, 60],
    "age": [40.0, 10.0, np.nan, 20.0, 30.0],
    "gender": ["M", "F", None, "M", "F"],
    "job": ["writer", "", "artist", " writer ", "nurse"],
})


def test_vocabulary_codes_are_sorted_values_from_1_and_0_for_missing_or_empty():
    codes, size = vocabulary_codes(USERS["job"])
    # vocabulary (sorted): artist 1, nurse 2, writer 3; "" -> 0; " writer " is stripped to writer
    assert codes.tolist() == [3, 0, 1, 3, 2] and size == 4
    codes, size = vocabulary_codes(USERS["gender"])
    assert codes.tolist() == [2, 1, 0, 2, 1] and size == 3


def test_bucket_codes_are_quantile_buckets_and_0_for_missing():
    # ages 10, 20, 30, 40 (+ NaN), 2 buckets: edge 20 (the median as a data value), bucket 1 = (-inf, 20]
    codes, size = bucket_codes(USERS["age"], buckets=2)
    assert codes.tolist() == [2, 1, 0, 1, 2] and size == 3
    # 4 buckets: edges 10, 20, 30 -> every age its own bucket
    codes, size = bucket_codes(USERS["age"], buckets=4)
    assert codes.tolist() == [4, 1, 0, 2, 3] and size == 5
    # few distinct values: duplicate edges collapse, no bucket is left empty
    codes, size = bucket_codes(pd.Series([1, 1, 1, 2]), buckets=4)
    assert codes.tolist() == [1, 1, 1, 2] and size == 3
    codes, size = bucket_codes(pd.Series([21, 22, 23]), buckets=10)
    assert codes.tolist() == [1, 2, 3] and size == 4
    codes, size = bucket_codes(pd.Series([7.0, 7.0]), buckets=10)
    assert codes.tolist() == [1, 1] and size == 2
    codes, size = bucket_codes(pd.Series([np.nan, np.nan]), buckets=4)
    assert codes.tolist() == [0, 0] and size == 1


def test_encoding_is_aligned_with_the_sorted_user_ids_and_unknown_users_get_0():
    cfg = DataConfig(user_features=("age", "gender", "job"), user_feature_buckets=2)
    uf = encode_user_features(_raw(USERS), np.array([10, 20, 30, 40, 50]), cfg)   # user 40 is not in the table
    assert uf.names == ("age", "gender", "job") and uf.sizes == (3, 3, 4)
    assert uf.codes.dtype == np.int64
    assert uf.codes.tolist() == [[1, 1, 0],     # user 10: age 10, F, empty job
                                 [0, 0, 1],     # user 20: no age, no gender, artist
                                 [2, 2, 3],     # user 30: age 40, M, writer
                                 [0, 0, 0],     # user 40: not in the users table
                                 [1, 2, 3]]     # user 50: age 20, M, " writer "


def test_buckets_come_from_every_user_of_the_table_not_only_the_sampled_ones():
    cfg = DataConfig(user_features=("age",), user_feature_buckets=2)
    uf = encode_user_features(_raw(USERS), np.array([10, 50]), cfg)        # ages 10, 20: both <= the table's median
    assert uf.codes[:, 0].tolist() == [1, 1]


def test_auto_takes_the_sources_list_and_no_users_table_gives_no_fields():
    uf = encode_user_features(_raw(USERS, auto=("gender",)), np.array([10, 20]), DataConfig())
    assert uf.names == ("gender",) and uf.codes.tolist() == [[1], [0]]
    none = encode_user_features(_raw(None, auto=("gender",)), np.array([10, 20]), DataConfig())
    assert none.num_fields == 0 and none.codes.shape == (2, 0)
    empty = encode_user_features(_raw(USERS, auto=("gender",)), np.array([10, 20]), DataConfig(user_features=()))
    assert empty.num_fields == 0 and empty.codes.shape == (2, 0)


def test_a_missing_column_names_the_field_the_column_and_the_table():
    with pytest.raises(DataError, match=r"data\.user_features: column 'agee' is not in the tiny users table; "
                                        r"its columns: user_id, age, gender, job"):
        encode_user_features(_raw(USERS), np.array([10]), DataConfig(user_features=("agee",)))
    with pytest.raises(DataError, match=r"data\.user_features: names 'age' but tiny has no users table"):
        encode_user_features(_raw(None), np.array([10]), DataConfig(user_features=("age",)))


def test_a_duplicate_user_id_in_the_users_table_is_refused():
    dup = USERS.assign(user_id=[30, 10, 20, 10, 60])
    with pytest.raises(DataError, match=r"tiny users table: duplicate user_id 10"):
        encode_user_features(_raw(dup), np.array([10]), DataConfig(user_features=("age",)))


def test_movielens_auto_is_age_gender_occupation_and_zip_stays_out(fake_movielens: Path):
    raw = load_movielens(fake_movielens)
    assert "zip" in raw.users.columns
    s = build_samples(raw, DataConfig(source="movielens-100k", cold_item_frac=0.2))
    uf = s.user_features
    assert uf.names == ("age", "gender", "occupation") and uf.codes.shape == (s.num_users, 3)
    # fake users 1..3: ages 21, 22, 23 (3 distinct -> 3 buckets), all M, all writer
    assert uf.codes.tolist() == [[1, 1, 1], [2, 1, 1], [3, 1, 1]] and uf.sizes == (4, 2, 2)


def test_files_auto_is_every_users_column_but_user_id(files_dataset: Path):
    pd.read_csv(files_dataset / "users.csv").assign(city=["a", "b", "a"]).to_csv(files_dataset / "users.csv",
                                                                               index=False)
    raw = load_files(files_dataset)
    s = build_samples(raw, DataConfig(source="files", data_dir=str(files_dataset)))
    assert s.user_features.names == ("age", "city")
    assert s.user_features.codes.tolist() == [[1, 1], [1, 2], [1, 1]]     # one age: one bucket
    with pytest.raises(DataError, match=r"column 'zip' is not in the files:\S+ users table"):
        build_samples(raw, DataConfig(source="files", data_dir=str(files_dataset), user_features=("zip",)))


def test_synthetic_data_has_no_user_features():
    from em3.data.synthetic import generate
    s = build_samples(generate("tiny", 0), DataConfig())
    assert s.user_features.num_fields == 0 and s.user_features.codes.shape == (s.num_users, 0)
