import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTPTypes
import PresenceCore
import Synchronization

extension HTTPFields {
    /// The credential of `Authorization: Bearer …` (a user token or the admin key), if any.
    var bearerToken: String? {
        guard let header = self[.authorization], header.hasPrefix("Bearer ") else { return nil }
        return String(header.dropFirst("Bearer ".count))
    }
}

/// The `Date` header's text (RFC 9110 IMF-fixdate), made once a second and shared.
enum HTTPDate {
    private static let cache = Mutex<(second: Int64, text: String)>((-1, ""))

    static func current(nowMillis: Int64) -> String {
        let second = nowMillis / 1000
        if let text = cache.withLock({ $0.second == second ? $0.text : nil }) { return text }
        let text = format(epochSeconds: second)
        cache.withLock { $0 = (second, text) }
        return text
    }

    static func format(epochSeconds: Int64) -> String {
        let days = epochSeconds >= 0 ? epochSeconds / 86_400 : (epochSeconds - 86_399) / 86_400
        let secondOfDay = epochSeconds - days * 86_400
        // Days to a civil date (Howard Hinnant's algorithm), in the proleptic Gregorian calendar.
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        // 1970-01-01 was a Thursday.
        let weekday = ((days % 7) + 11) % 7
        let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func twoDigits(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(weekdays[Int(weekday)]), \(twoDigits(day)) \(months[Int(month) - 1]) \(year) "
            + "\(twoDigits(secondOfDay / 3_600)):\(twoDigits(secondOfDay / 60 % 60)):\(twoDigits(secondOfDay % 60)) GMT"
    }
}
