"""``offline data sample``: a bilingual sample workspace with the problems the cleaning chain fixes.

:func:`~offline.data.sample.files.generate` writes four files into a directory:

- ``tickets.jsonl`` (text kind): customer-support tickets in Chinese and English, one category
  each, with category keywords (:data:`offline.data.keywords.CATEGORY_KEYWORDS`) a keyword
  rule can pre-label from;
- ``conversations.jsonl`` (conversation kind): support chats of 2-8 messages;
- ``sensors.csv`` (tabular kind): a per-minute series with gaps, spikes and unparseable cells;
- ``SAMPLE.json``: the answer key, saying where every planted problem is (duplicates and their
  originals, near duplicates with their edits and 5-gram Jaccard, PII by type, checksum-failing
  decoys, markup and noise rows, malformed lines, conversation defects, sensor gaps and spikes).

``SAMPLE.json`` sections; each row entry names ``dataset``, ``id`` and 1-based ``line``:

- ``exact_duplicates``: ``original`` (an earlier id) and ``variant`` (identical, case, whitespace);
- ``near_duplicates``: ``original``, ``edits`` (``op``, ``at`` in the original text, ``before``,
  ``after``; for a conversation, in message ``message``), ``jaccard`` (character 5-grams; a
  conversation's contents joined by newlines) and ``punctuation_only``;
- ``pii``: ``type`` (email, phone, cn_id, bank_card, ipv4, ipv6), ``format`` and ``value`` as it
  appears in the text; ``decoys``: look-alikes that fail their checksum, with ``why``;
- ``noise``: ``markup``, ``fullwidth``, ``control``, ``junk`` and ``spam`` rows;
- ``malformed``: ``problem`` (broken_json, invalid_utf8, missing_text, text_number, text_list,
  oversized), ``detail`` and ``bytes``; ``conversation_issues``: ``problem`` (empty_turn,
  role_alternation, missing_content, long) and the ``message`` index;
- ``sensors``: ``missing``, ``outliers`` and ``unparseable`` cells by ``row`` (0-based data row),
  ``line`` and ``column``.

Everything is drawn from ``random.Random(seed)``, so the same arguments give byte-identical files.
Base texts are assembled from many independent slots (products, order numbers, amounts, dates,
cities, sentences picked and ordered at random) so that no two of them are near duplicates by
accident; only the planted copies are.

Modules: :mod:`~.files` (``generate``, ``iter_tickets``, the manifest), one generator per dataset
(:mod:`~.tickets`, :mod:`~.conversations`, :mod:`~.sensors`), what they plant (:mod:`~.pii`,
:mod:`~.noise`), the shared plan and answer key (:mod:`~.plan`), text assembly (:mod:`~.text`),
and the word lists and templates as data files (``tables/*.json``, read by :mod:`~.tables`).
Checksums (Luhn, MOD 11-2) come from :mod:`offline.data.steps.pii`, the detector's own rules.
"""
