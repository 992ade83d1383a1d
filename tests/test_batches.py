"""Label alignment: the logit at position t predicts x_{t+1}; weights belong to the label."""
import pytest

from rocktokens.core.sequences import TokenSequence, collate, response_positions


def test_response_positions():
    pos, lab = response_positions(3, 7)
    assert list(pos) == [2, 3, 4, 5] and list(lab) == [3, 4, 5, 6]


def test_collate_aligns_labels_and_weights():
    a = TokenSequence(ids=[10, 11, 12, 20, 21], prompt_len=3, weights=[0.0, 1.0])
    b = TokenSequence(ids=[10, 30, 31, 32], prompt_len=1)
    mb = collate([a, b], pad_id=0)
    assert mb.input_ids.tolist() == [[10, 11, 12, 20, 21], [10, 30, 31, 32, 0]]
    assert mb.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # scored positions and their labels: ids[row, col + 1] == label, always
    for r, c, l in zip(mb.rows.tolist(), mb.cols.tolist(), mb.labels.tolist()):
        assert mb.input_ids[r, c + 1].item() == l
    assert mb.labels.tolist() == [20, 21, 30, 31, 32]
    # the weight 0 of the first response token x_3 = 20 sits on the logit at position 2 that predicts it
    assert mb.cols.tolist()[:2] == [2, 3] and mb.weights.tolist()[:2] == [0.0, 1.0]


def test_bad_sequences():
    with pytest.raises(ValueError, match="non-empty prompt and response"):
        TokenSequence(ids=[1, 2], prompt_len=2)
    with pytest.raises(ValueError, match="exceeds the model context"):
        collate([TokenSequence(ids=list(range(10)), prompt_len=2)], pad_id=0, max_len=8)
