#if canImport(SwiftUI)
import SwiftUI
import PresenceCore

/// A SwiftUI face pile over `FacePileModel`: overlapping round avatars (offline ones dimmed)
/// and a "+N" that lists up to ten more.
///
/// ```swift
/// FacePile(users: users)
/// ```
@available(macOS 14, iOS 17, tvOS 17, *)
public struct FacePile: View {
    let model: FacePileModel
    @State private var showingOverflow = false

    /// `userCount`: the room's count (`RoomCounts.users`), for a list that holds only a big room's first users.
    public init(users: [UserRecord], userCount: Int? = nil, now: Date = Date()) {
        model = FacePileModel(users: users, nowMillis: Int64(now.timeIntervalSince1970 * 1000), userCount: userCount)
    }

    public var body: some View {
        HStack(spacing: -10) {
            ForEach(model.visible) { face in
                avatar(face).help("\(face.title)\n\(face.status)")
                    .accessibilityLabel("\(face.title), \(face.status)")
            }
            if model.overflowCount > 0 {
                Button(model.overflowLabel) { showingOverflow.toggle() }
                    .frame(width: 36, height: 36)
                    .background(Circle().fill(.gray.opacity(0.3)))
                    .popover(isPresented: $showingOverflow) {
                        VStack(alignment: .leading) {
                            ForEach(model.overflow) { face in Text("\(face.emoji) \(face.title) — \(face.status)") }
                        }
                        .padding()
                    }
            }
        }
    }

    @ViewBuilder private func avatar(_ face: FacePileModel.Face) -> some View {
        Group {
            if let url = face.imageURL.flatMap(URL.init(string:)) {
                AsyncImage(url: url) { $0.resizable() } placeholder: { Text(face.emoji) }
            } else {
                Text(face.emoji).font(.title2)
            }
        }
        .frame(width: 36, height: 36)
        .background(Circle().fill(.background))
        .clipShape(Circle())
        .overlay(Circle().stroke(.white, lineWidth: 2))
        .overlay(alignment: .bottomTrailing) { if face.away { Text("🕒").font(.caption2) } }
        .opacity(face.online ? (face.away ? 0.65 : 1) : 0.45)
    }
}

@available(macOS 14, iOS 17, tvOS 17, *)
extension View {
    /// Shows the user away in `room` while this scene is not active (the app went to the
    /// background, the window lost its scene), and active again when it is.
    ///
    /// ```swift
    /// EditorView().presenceAway(room)
    /// ```
    public func presenceAway(_ room: RoomPresence) -> some View {
        modifier(ScenePhaseAway(room: room))
    }
}

@available(macOS 14, iOS 17, tvOS 17, *)
struct ScenePhaseAway: ViewModifier {
    let room: RoomPresence
    @Environment(\.scenePhase) private var scenePhase

    func body(content: Content) -> some View {
        content.onChange(of: scenePhase, initial: true) { _, phase in
            Task { try? await room.setAway(phase != .active) }
        }
    }
}
#endif
