use super::*;
use crate::cache::key::CacheKey;
use http_body_util::BodyExt;

fn slot(s: &str) -> StoreKey {
    StoreKey::base(CacheKey::new(s, None))
}

fn head(shareable: bool) -> FillHead {
    FillHead {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        kind: ContentKind::Segment,
        content_length: None,
        shareable,
        freshness: None,
        initial_age: Duration::ZERO,
        vary: None,
        origin: "o".into(),
        revalidated: false,
        from_store: false,
        encodings: None,
    }
}

#[tokio::test]
async fn one_leader_then_followers_replay_and_stream() {
    let table = FillTable::new(1 << 30);
    let s = slot("/a.ts");
    let Ok(Joined::Leader(mut leader, writer)) = table.join(&s, 10) else {
        panic!("first join leads")
    };
    let Ok(Joined::Follower(mut early)) = table.join(&s, 10) else {
        panic!("second join follows")
    };
    writer.set_head(head(true));
    assert!(matches!(leader.head().await, Ok(HeadOutcome::Ready(_))));
    assert!(matches!(early.head().await, Ok(HeadOutcome::Ready(_))));
    writer.push(Bytes::from_static(b"hello ")).await;
    let Ok(Joined::Follower(late)) = table.join(&s, 10) else {
        panic!("late join follows")
    };
    assert_eq!(early.next_chunk().await.unwrap().unwrap(), "hello ");
    writer.push(Bytes::from_static(b"world")).await;
    writer.finish();
    assert!(table.is_empty(), "finished fills leave the table");
    for r in [leader, early, late] {
        let body = r.into_body(None).collect().await.unwrap().to_bytes();
        assert!(body.ends_with(b"world"));
    }
}

#[tokio::test]
async fn failure_is_an_error_not_an_end() {
    let table = FillTable::new(1 << 30);
    let s = slot("/b.ts");
    let Ok(Joined::Leader(reader, writer)) = table.join(&s, 10) else {
        panic!()
    };
    writer.set_head(head(true));
    writer.push(Bytes::from_static(b"half")).await;
    writer.fail(EdgeError::OriginProtocol {
        origin: "o".into(),
        detail: "cut".into(),
    });
    let err = reader.into_body(None).collect().await;
    assert!(err.is_err());
    assert!(table.is_empty());
}

#[tokio::test]
async fn dropped_writer_fails_waiters() {
    let table = FillTable::new(1 << 30);
    let s = slot("/c.ts");
    let Ok(Joined::Leader(mut reader, writer)) = table.join(&s, 10) else {
        panic!()
    };
    drop(writer);
    assert!(reader.head().await.is_err());
}

#[tokio::test]
async fn unshareable_heads_send_followers_away() {
    let table = FillTable::new(1 << 30);
    let s = slot("/d");
    let Ok(Joined::Leader(mut leader, writer)) = table.join(&s, 10) else {
        panic!()
    };
    let Ok(Joined::Follower(mut f)) = table.join(&s, 10) else {
        panic!()
    };
    writer.set_head(head(false));
    assert!(matches!(leader.head().await, Ok(HeadOutcome::Ready(_))));
    assert!(matches!(f.head().await, Ok(HeadOutcome::NotShared)));
}

#[tokio::test]
async fn waiter_bound() {
    let table = FillTable::new(1 << 30);
    let s = slot("/e");
    let Ok(Joined::Leader(_l, _w)) = table.join(&s, 2) else {
        panic!()
    };
    let Ok(Joined::Follower(_f)) = table.join(&s, 2) else {
        panic!()
    };
    assert!(matches!(
        table.join(&s, 2),
        Err(EdgeError::Overloaded { .. })
    ));
}

#[tokio::test]
async fn streaming_mode_trims_and_refuses_joiners() {
    let table = FillTable::new(1 << 30);
    let s = slot("/big");
    let Ok(Joined::Leader(mut reader, mut writer)) = table.join(&s, 10) else {
        panic!()
    };
    writer.set_head(head(true));
    writer.stream_only();
    assert!(table.is_empty());
    // A new request for the same slot gets its own fill.
    assert!(matches!(table.join(&s, 10), Ok(Joined::Leader(..))));
    assert_eq!(
        writer.push(Bytes::from(vec![1u8; 1000])).await,
        Push::Continue
    );
    assert_eq!(reader.next_chunk().await.unwrap().unwrap().len(), 1000);
    assert_eq!(
        writer.push(Bytes::from(vec![2u8; 10])).await,
        Push::Continue
    );
    assert_eq!(
        writer.fill().lock().chunks.len(),
        1,
        "read chunks are dropped"
    );
    drop(reader);
    assert_eq!(writer.push(Bytes::from(vec![3u8; 10])).await, Push::Stop);
}

#[tokio::test]
async fn range_slices_across_chunks() {
    let table = FillTable::new(1 << 30);
    let s = slot("/r");
    let Ok(Joined::Leader(reader, writer)) = table.join(&s, 10) else {
        panic!()
    };
    writer.set_head(head(true));
    for part in ["abc", "def", "ghi"] {
        writer.push(Bytes::from(part)).await;
    }
    writer.finish();
    let body = reader
        .into_body(Some((2, 7)))
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"cdefg");
}

fn chunk(n: usize) -> Bytes {
    Bytes::from(vec![7u8; n])
}

#[tokio::test]
async fn a_fill_runs_a_window_ahead_of_its_fastest_reader_and_no_further() {
    let table = FillTable::new(1 << 30);
    let Ok(Joined::Leader(mut slow, writer)) = table.join(&slot("/p"), 10) else {
        panic!()
    };
    writer.set_head(head(true));
    let mut pushed = 0;
    loop {
        let push = writer.push(chunk(64 << 10));
        match tokio::time::timeout(Duration::from_millis(50), push).await {
            Ok(Push::Continue) => pushed += 64 << 10,
            Ok(Push::Stop) => panic!("stopped"),
            Err(_) => break,
        }
        assert!(pushed <= 2 * WINDOW, "never paced");
    }
    assert!(pushed >= WINDOW - (64 << 10), "paced early: {pushed}");
    // A reader that reads lets it go on.
    let Ok(Joined::Follower(mut fast)) = table.join(&slot("/p"), 10) else {
        panic!()
    };
    while let Some(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), fast.next_chunk())
        .await
        .ok()
        .flatten()
    {}
    let push = writer.push(chunk(64 << 10));
    assert_eq!(
        tokio::time::timeout(Duration::from_millis(500), push).await,
        Ok(Push::Continue)
    );
    assert!(slow.next_chunk().await.is_some());
}

#[tokio::test]
async fn over_budget_whole_bodies_are_given_up_and_unread_fills_abandoned() {
    let table = FillTable::new(2 << 20);
    tokio::time::sleep(SHED_EVERY).await;
    // A fill with a reader that does not read, keeping its body to store it.
    let Ok(Joined::Leader(_stalled, kept)) = table.join(&slot("/kept"), 10) else {
        panic!()
    };
    kept.set_head(head(true));
    for _ in 0..8 {
        let _ = tokio::time::timeout(Duration::from_millis(20), kept.push(chunk(128 << 10))).await;
    }
    // A fill nobody reads (its leader left), filling for the cache.
    let Ok(Joined::Leader(leader, unread)) = table.join(&slot("/unread"), 10) else {
        panic!()
    };
    drop(leader);
    unread.set_head(head(true));
    let mut stopped = false;
    for _ in 0..64 {
        tokio::time::sleep(SHED_EVERY).await;
        let push = unread.push(chunk(128 << 10));
        if tokio::time::timeout(Duration::from_millis(200), push).await == Ok(Push::Stop) {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "an unread fill over budget is given up");
    drop(unread);
    assert!(
        table.budget().used() <= 2 << 20,
        "{}",
        table.budget().used()
    );
    drop(kept);
}

#[tokio::test]
async fn a_shed_fill_streams_on_without_what_its_readers_passed() {
    let table = FillTable::new(1 << 30);
    let Ok(Joined::Leader(mut reader, writer)) = table.join(&slot("/shed"), 10) else {
        panic!()
    };
    writer.set_head(head(true));
    writer.push(chunk(1000)).await;
    writer.push(chunk(1000)).await;
    assert_eq!(reader.next_chunk().await.unwrap().unwrap().len(), 1000);
    assert!(writer.fill().shed());
    assert!(writer.is_streaming());
    assert!(
        table.is_empty(),
        "no one joins a fill that will not be stored"
    );
    assert_eq!(writer.fill().held(), 1000, "the chunk read is gone");
    assert_eq!(table.budget().used(), 1000);
    assert_eq!(reader.next_chunk().await.unwrap().unwrap().len(), 1000);
    drop(reader);
    assert_eq!(writer.push(chunk(1)).await, Push::Stop, "no reader left");
}
