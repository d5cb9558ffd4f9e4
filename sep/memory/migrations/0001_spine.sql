-- Prices, texts and the stocks they belong to.
CREATE TABLE stocks (
    stock TEXT PRIMARY KEY,          -- KRX code (005930) or ticker (AAPL)
    name TEXT,
    market TEXT NOT NULL             -- XKRX: exchange calendar; PRICES: trading days of the price rows
);

CREATE TABLE prices (
    stock TEXT NOT NULL,
    date TEXT NOT NULL,              -- ISO YYYY-MM-DD, exchange-local
    open REAL, high REAL, low REAL,
    close REAL NOT NULL,
    volume REAL,
    source TEXT,                     -- the file the row came from
    PRIMARY KEY (stock, date)
);

CREATE TABLE texts (
    id INTEGER PRIMARY KEY,
    stock TEXT NOT NULL,
    source TEXT NOT NULL,            -- naver-board | news | report | tweet | ...
    published_at TEXT,               -- ISO timestamp with offset when the time is known
    date TEXT NOT NULL,              -- ISO day in the market's local time (KST for Korean sources)
    title TEXT NOT NULL,
    body TEXT,
    url TEXT,
    author TEXT,
    imported_from TEXT,
    content_key TEXT NOT NULL UNIQUE -- hash of the content: re-importing adds nothing
);
CREATE INDEX texts_stock_date ON texts(stock, date);

CREATE TABLE imports (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,              -- prices | texts
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    rows_read INTEGER NOT NULL,
    rows_added INTEGER NOT NULL,
    rows_skipped INTEGER NOT NULL,
    at TEXT NOT NULL
);

CREATE TABLE crawl_pages (           -- crawler checkpoints: a rerun the same day skips done pages
    stock TEXT NOT NULL,
    day TEXT NOT NULL,
    page INTEGER NOT NULL,
    posts INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (stock, day, page)
);
